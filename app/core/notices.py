"""Operational events for BATCH_EVENTS_WEBHOOK_URL, beside the batch events: a destination held
by its circuit breaker or by an operator (`destination.paused`), sending again
(`destination.resumed`), and a result's delivery that failed for good (`delivery.exhausted`).
They go through the outbox like batch events (same shape, signature, retries and audit trail), to
BATCH_EVENTS_WEBHOOK_URL and to every subscription that takes them (app.core.subscriptions).

A failed event delivery announces nothing: an events URL that is down must not feed itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import subscriptions
from app.core.destinations.breaker import Change
from app.db.models import Delivery, delivery_public_id
from app.ground.statuses import BreakerState


async def queue(
    session: AsyncSession, url: str | None, events: Sequence[dict[str, Any]], now: datetime
) -> None:
    """Queue `events` for `url` (BATCH_EVENTS_WEBHOOK_URL, when set) and for every subscription
    that takes them (these events have no model, backend or origin to filter on)."""
    if not events:
        return
    listening = await subscriptions.enabled(session)
    rows = []
    for event in events:
        if url:
            rows.append(subscriptions.event_delivery_row(event, url, now))
        for subscription in subscriptions.matching(listening, event["type"], {}):
            rows.append(
                subscriptions.event_delivery_row(
                    event, subscription.url, now, subscription_id=subscription.id
                )
            )
    if rows:
        await session.execute(insert(Delivery), rows)


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
        events.append(subscriptions.event(f"evt_dst_{event.id}", kind, event.at, data))
    return events


def exhausted_event(
    row_id: int, custom_id: str | None, attempts: int, error: str | None, at: datetime
) -> dict[str, Any]:
    """`delivery.exhausted`: a result's delivery failed for good (attempts ran out, or a
    permanent failure); the operator can redeliver it."""
    public_id = delivery_public_id(row_id)
    data = {"delivery_id": public_id, "custom_id": custom_id, "attempts": attempts, "last_error": error}
    return subscriptions.event(f"evt_{public_id}_exhausted_{attempts}", "delivery.exhausted", at, data)
