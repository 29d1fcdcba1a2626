"""Operational events for BATCH_EVENTS_WEBHOOK_URL, beside the batch events: a destination held
by its circuit breaker or by an operator (`destination.paused`), sending again
(`destination.resumed`), and a result's delivery that failed for good (`delivery.exhausted`).
They go through the outbox like batch events (same shape, signature, retries and audit trail).

A failed event delivery announces nothing: an events URL that is down must not feed itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.destinations.breaker import Change
from app.db.models import Delivery, delivery_public_id
from app.ground.statuses import BreakerState, DeliveryStatus
from app.net.destinations import destination_of

CHANNEL = "webhook"
# The webhook channel signs a delivery with the secret its target names.
SIGNING = "batch_events"


async def queue(
    session: AsyncSession, url: str | None, events: Sequence[dict[str, Any]], now: datetime
) -> None:
    """Queue `events` for `url` (nothing when no URL is set)."""
    if url and events:
        await session.execute(insert(Delivery), [delivery_row(event, url, now) for event in events])


def delivery_row(
    event: dict[str, Any], url: str, now: datetime, batch_event_id: int | None = None
) -> dict[str, Any]:
    """The outbox row that sends `event` (a batch event, or one of these) to `url`, signed with
    the batch events' secret."""
    return {
        "batch_event_id": batch_event_id,
        "channel": CHANNEL,
        # The event is frozen with its target: every attempt sends the same bytes.
        "target": {"type": CHANNEL, "webhook_url": url, "signing": SIGNING, "event": event},
        "destination": destination_of({"type": CHANNEL, "webhook_url": url}),
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "total_attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def breaker_events(changes: Sequence[Change]) -> list[dict[str, Any]]:
    """`destination.paused` for a breaker that opened, `destination.resumed` for one that closed."""
    events = []
    for change in changes:
        event = change.event
        # A probe going out or failing is no news: the destination was held and still is.
        if event.to_state != BreakerState.CLOSED and event.from_state != BreakerState.CLOSED:
            continue
        kind = "destination.resumed" if event.to_state == BreakerState.CLOSED else "destination.paused"
        data: dict[str, Any] = {"destination": change.destination, "reason": event.reason}
        if kind == "destination.paused":
            data["probe_at"] = int(change.probe_at.timestamp()) if change.probe_at else None
        events.append(_event(f"evt_dst_{event.id}", kind, event.at, data))
    return events


def exhausted_event(
    row_id: int, custom_id: str | None, attempts: int, error: str | None, at: datetime
) -> dict[str, Any]:
    """`delivery.exhausted`: a result's delivery failed for good (attempts ran out, or a
    permanent failure); the operator can redeliver it."""
    public_id = delivery_public_id(row_id)
    data = {"delivery_id": public_id, "custom_id": custom_id, "attempts": attempts, "last_error": error}
    return _event(f"evt_{public_id}_exhausted_{attempts}", "delivery.exhausted", at, data)


def _event(event_id: str, kind: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": kind, "created_at": int(at.timestamp()), "data": data}
