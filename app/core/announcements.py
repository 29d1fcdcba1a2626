"""Batch events: when a batch ends (completed, failed, expired, cancelled), an OpenAI-shaped
webhook event is queued for BATCH_EVENTS_WEBHOOK_URL in the delivery outbox, so it is sent with
the same retries, signature and audit trail as results.

The transitions function marks every terminal batch_events row `announce`; the finish step
turns the marks into deliveries. A drop-in batch is announced once its face would show it ended
(its files written), so a receiver that fetches the batch on the event sees it final. Marks made
while no URL is set are cleared without sending: events are not replayed to a URL set later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select, update

from app.core.dropin.create import DROPIN_ORIGINS
from app.core.dropin.ids import public_batch_id
from app.core.rules.states import B, DeliveryStatus
from app.core.runtime.clock import utcnow
from app.db.models import Batch, BatchEvent, Delivery
from app.db.session import Database

EVENT_TYPES = {
    B.DONE: "batch.completed",
    B.FAILED: "batch.failed",
    B.EXPIRED: "batch.expired",
    B.CANCELLED: "batch.cancelled",
}
CHANNEL = "webhook"
# The webhook channel signs a delivery with the secret its target names.
SIGNING = "batch_events"
CHUNK = 500


async def queue_due(db: Database, url: str | None, limit: int = CHUNK) -> int:
    """Turn up to `limit` marked batch events into deliveries to `url` (or only clear the marks
    when no URL is set); returns how many were queued."""
    async with db.transaction() as session:
        due = (
            await session.execute(
                select(BatchEvent.id, BatchEvent.to_status, BatchEvent.at, Batch.id, Batch.origin)
                .join(Batch, Batch.id == BatchEvent.batch_id)
                .where(
                    BatchEvent.announce,
                    or_(Batch.origin.not_in(DROPIN_ORIGINS), Batch.files_written_at.is_not(None)),
                )
                .order_by(BatchEvent.id)
                .limit(limit)
                .with_for_update(of=BatchEvent, skip_locked=True)
            )
        ).all()
        if not due:
            return 0
        await session.execute(
            update(BatchEvent)
            .where(BatchEvent.id.in_([row[0] for row in due]))
            .values(announce=False)
            .execution_options(synchronize_session=False)
        )
        if url is None:
            return 0
        now = utcnow()
        await session.execute(
            insert(Delivery),
            [
                _delivery_row(event_id, _event(event_id, status, at, batch_id, origin), url, now)
                for event_id, status, at, batch_id, origin in due
            ],
        )
    return len(due)


def _event(event_id: int, status: str, at: datetime, batch_id: int, origin: str) -> dict[str, Any]:
    """The event as OpenAI's webhooks send it: {id, object, type, created_at, data: {id}}."""
    return {
        "id": f"evt_{event_id}",
        "object": "event",
        "type": EVENT_TYPES[B(status)],
        "created_at": int(at.timestamp()),
        "data": {"id": public_batch_id(origin, batch_id), "batchgate_batch_id": batch_id, "origin": origin},
    }


def _delivery_row(event_id: int, event: dict[str, Any], url: str, now: datetime) -> dict[str, Any]:
    return {
        "batch_event_id": event_id,
        "channel": CHANNEL,
        # The event is frozen with its target: every attempt sends the same bytes.
        "target": {"type": CHANNEL, "webhook_url": url, "signing": SIGNING, "event": event},
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "total_attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
