"""Batch events: a batch's life, from its creation to its end, sent to BATCH_EVENTS_WEBHOOK_URL
in OpenAI's webhook event shape through the delivery outbox, so they get the same retries,
signature and audit trail as results.

The events: `batch.created` when the batch row is made (a native batch when the batcher opens
its building batch for a group, a drop-in batch at create), `batch.in_progress` the first time
it runs, `batch.finalizing` the first time it collects its results, then its end (completed,
failed, expired, cancelled). OpenAI sends only the ends; the others are Batchgate's, in the same
shape. The start events go once per batch: a batch that runs again (token_limit_exceeded, an
operator's retry) sends no second `created` or `in_progress`; an end is sent at every end.

The transitions function marks the rows; the finish step turns the marks into deliveries here,
dropping repeated starts. A drop-in batch's end is announced once its face would show it ended
(its files written), so a receiver that fetches the batch on the event sees it final. Marks made
while no URL is set are cleared without sending: events are not replayed to a URL set later.
Order per batch is kept by the outbox: an event is not sent while an earlier one of its batch
still waits (app.core.delivery.in_turn).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, insert, or_, select, update
from sqlalchemy.orm import aliased

from app.core.dropin.create import DROPIN_ORIGINS
from app.core.dropin.ids import public_batch_id
from app.core.notices import delivery_row
from app.core.rules.states import BATCH_TERMINAL, B
from app.db.models import Batch, BatchEvent, Delivery
from app.db.session import Database
from app.ground.clock import utcnow

EVENT_TYPES = {
    B.PROCESSING: "batch.in_progress",
    B.COLLECTING: "batch.finalizing",
    B.DONE: "batch.completed",
    B.FAILED: "batch.failed",
    B.EXPIRED: "batch.expired",
    B.CANCELLED: "batch.cancelled",
}
CREATED = "batch.created"
CHUNK = 500


async def queue_due(db: Database, url: str | None, limit: int = CHUNK) -> int:
    """Turn up to `limit` marked batch events into deliveries to `url` (or only clear the marks
    when no URL is set); returns how many were queued."""
    async with db.transaction() as session:
        due = (
            await session.execute(
                select(BatchEvent.id, BatchEvent.from_status, BatchEvent.to_status, BatchEvent.at)
                .add_columns(Batch.id, Batch.origin, _repeated())
                .join(Batch, Batch.id == BatchEvent.batch_id)
                .where(
                    BatchEvent.announce,
                    or_(~_is_end(), Batch.origin.not_in(DROPIN_ORIGINS), Batch.files_written_at.is_not(None)),
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
        sending = [row for row in due if not row[-1]]
        if url is None or not sending:
            return 0
        now = utcnow()
        await session.execute(
            insert(Delivery),
            [delivery_row(_event(*row[:-1]), url, now, batch_event_id=row[0]) for row in sending],
        )
    return len(sending)


def _is_end() -> ColumnElement[bool]:
    """An event row that ends its batch (a begin row is its creation, even when born failed)."""
    return and_(BatchEvent.from_status.is_not(None), BatchEvent.to_status.in_(list(BATCH_TERMINAL)))


def _repeated() -> ColumnElement[bool]:
    """A start the batch has been through before (processing or collecting again): not sent."""
    earlier = aliased(BatchEvent)
    return and_(
        BatchEvent.from_status.is_not(None),
        BatchEvent.to_status.not_in(list(BATCH_TERMINAL)),
        exists().where(
            earlier.batch_id == BatchEvent.batch_id,
            earlier.to_status == BatchEvent.to_status,
            earlier.id < BatchEvent.id,
        ),
    ).label("repeated")


def event_type(from_status: str | None, to_status: str) -> str:
    """The event a batch_events row is announced as."""
    return CREATED if from_status is None else EVENT_TYPES[B(to_status)]


def _event(
    event_id: int, from_status: str | None, to_status: str, at: datetime, batch_id: int, origin: str
) -> dict[str, Any]:
    """The event as OpenAI's webhooks send it: {id, object, type, created_at, data: {id}}."""
    return {
        "id": f"evt_{event_id}",
        "object": "event",
        "type": event_type(from_status, to_status),
        "created_at": int(at.timestamp()),
        "data": {"id": public_batch_id(origin, batch_id), "batchgate_batch_id": batch_id, "origin": origin},
    }
