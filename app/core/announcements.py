"""Batch events: a batch's life, from its creation to its end, sent to BATCH_EVENTS_WEBHOOK_URL
and to the operator's subscriptions that take them (app.core.subscriptions), in OpenAI's webhook
event shape through the delivery outbox, so they get the same retries, signature and audit
trail as results. A drop-in batch that named its own completion webhook at create
(WEBHOOK_METADATA_KEY) gets its end there too, signed like a result.

The events: `batch.created` when the batch row is made (a native batch when the batcher opens
its building batch for a group, a drop-in batch at create), `batch.in_progress` the first time
it runs, `batch.finalizing` the first time it collects its results, then its end (completed,
failed, expired, cancelled). OpenAI sends only the ends; the others are Batchgate's, in the same
shape. The start events go once per batch: a batch that runs again (token_limit_exceeded, an
operator's retry) sends no second `created` or `in_progress`; an end is sent at every end.

The transitions function marks the rows; the finish step turns the marks into deliveries here,
dropping repeated starts. A drop-in batch's end is announced once its face would show it ended
(its files written), so a receiver that fetches the batch on the event sees it final. Marks made
while nobody takes them are cleared without sending: events are not replayed to a URL set later.
Order per batch and destination is kept by the outbox: an event is not sent while an earlier one
of its batch still waits for the same destination (app.core.delivery.in_turn).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, insert, or_, select, update
from sqlalchemy.orm import aliased

from app.core import subscriptions
from app.core.dropin.create import DROPIN_ORIGINS, WEBHOOK_METADATA_KEY
from app.core.dropin.ids import public_batch_id
from app.core.rules.states import BATCH_TERMINAL, B
from app.db.models import Batch, BatchEvent, Delivery, Subscription
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
ENDS = frozenset(EVENT_TYPES[status] for status in BATCH_TERMINAL)
# The webhook channel signs a delivery with the secret its target names.
SIGNING, RESULTS_SIGNING = "batch_events", "results"
CHUNK = 500


async def queue_due(db: Database, url: str | None, limit: int = CHUNK) -> int:
    """Turn up to `limit` marked batch events into deliveries: to `url`, to a drop-in batch's own
    completion webhook (its ends only) and to the subscriptions that take them; marks nobody
    takes are only cleared. Returns how many deliveries were queued."""
    async with db.transaction() as session:
        due = (
            await session.execute(
                select(BatchEvent.id.label("event_id"), BatchEvent.from_status, BatchEvent.to_status)
                .add_columns(BatchEvent.at, Batch.id.label("batch_id"), Batch.origin, Batch.model)
                .add_columns(Batch.backend, Batch.face_metadata, _repeated())
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
            .where(BatchEvent.id.in_([row.event_id for row in due]))
            .values(announce=False)
            .execution_options(synchronize_session=False)
        )
        listening = await subscriptions.enabled(session)
        now = utcnow()
        rows = [
            delivery for row in due if not row.repeated for delivery in _deliveries(row, url, listening, now)
        ]
        if rows:
            await session.execute(insert(Delivery), rows)
    return len(rows)


def _deliveries(
    row: Any, url: str | None, listening: list[Subscription], now: datetime
) -> list[dict[str, Any]]:
    """The deliveries of one batch event (a row of queue_due's select): one per URL that takes it."""
    event = _event(row.event_id, row.from_status, row.to_status, row.at, row.batch_id, row.origin)
    values = {"model": row.model, "backend": row.backend, "origin": row.origin}
    rows = []
    if url is not None:
        rows.append(subscriptions.event_delivery_row(event, url, now, SIGNING, batch_event_id=row.event_id))
    own = batch_webhook(row.face_metadata)
    if own is not None and event["type"] in ENDS and own != url:
        # The batch's own webhook is the user's: signed like a result (WEBHOOK_SECRET).
        rows.append(
            subscriptions.event_delivery_row(event, own, now, RESULTS_SIGNING, batch_event_id=row.event_id)
        )
    for subscription in subscriptions.matching(listening, event["type"], values):
        rows.append(
            subscriptions.event_delivery_row(
                event, subscription.url, now, batch_event_id=row.event_id, subscription_id=subscription.id
            )
        )
    return rows


def batch_webhook(metadata: Any) -> str | None:
    """A drop-in batch's own completion webhook, as its create named it (WEBHOOK_METADATA_KEY)."""
    url = metadata.get(WEBHOOK_METADATA_KEY) if isinstance(metadata, dict) else None
    return url if isinstance(url, str) and url else None


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
    data = {"id": public_batch_id(origin, batch_id), "batchgate_batch_id": batch_id, "origin": origin}
    return subscriptions.event(f"evt_{event_id}", event_type(from_status, to_status), at, data)
