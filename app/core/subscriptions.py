"""Event subscriptions: the operator subscribes a webhook URL to event types (`request.succeeded`,
`request.failed`, `batch.*`, `destination.*`, `delivery.*`, or `*`), optionally only for some
models, backends and origins. A matching event becomes one delivery per subscription through the
outbox, frozen with its target like a batch event, so it gets the same retries, signature
(BATCH_EVENTS_WEBHOOK_SECRET, else WEBHOOK_SECRET) and audit trail.

Events come from three places: batch events (app.core.announcements, next to
BATCH_EVENTS_WEBHOOK_URL), a request's outcome (app.core.results, in the transaction that stores
it), and operational events anyone calls `queue_event` for (a destination paused or resumed, a
delivery exhausted). Subscriptions are read in the transaction that queues the event: a
subscription made or changed takes effect for the next event, on every replica.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Delivery, Subscription
from app.ground.clock import utcnow
from app.ground.statuses import DeliveryStatus, RequestStatus
from app.net.destinations import destination_of

REQUEST_EVENTS = ("request.succeeded", "request.failed")
BATCH_EVENTS = (
    "batch.created",
    "batch.in_progress",
    "batch.finalizing",
    "batch.completed",
    "batch.failed",
    "batch.expired",
    "batch.cancelled",
)
OPERATIONAL_EVENTS = ("destination.paused", "destination.resumed", "delivery.exhausted")
EVENT_TYPES = (*REQUEST_EVENTS, *BATCH_EVENTS, *OPERATIONAL_EVENTS)
# What a subscription may name: an event type, a family of them, or every event.
SUBSCRIBABLE = frozenset({*EVENT_TYPES, "request.*", "batch.*", "destination.*", "delivery.*", "*"})
FILTERS = ("model", "backend", "origin")
CHANNEL = "webhook"
# The webhook channel signs a delivery with the secret its target names: the operator's events
# share BATCH_EVENTS_WEBHOOK_SECRET (WEBHOOK_SECRET when it is not set).
SIGNING = "batch_events"


def subscribes_to(event_types: Sequence[str], event_type: str) -> bool:
    """Whether a subscription's types take `event_type` (a family `batch.*` takes every batch event)."""
    family = event_type.split(".", 1)[0] + ".*"
    return any(t in ("*", family, event_type) for t in event_types)


def passes(filters: Mapping[str, Sequence[str]], values: Mapping[str, Any]) -> bool:
    """Whether an event with these model, backend and origin `values` passes a subscription's
    filters: each filter it names must list the event's value (an event without that value,
    such as a destination's, does not pass it)."""
    return all(not allowed or values.get(name) in allowed for name, allowed in filters.items())


async def enabled(session: AsyncSession) -> list[Subscription]:
    """The subscriptions that take events now (a handful: read whole, matched in Python)."""
    return list((await session.scalars(select(Subscription).where(Subscription.enabled))).all())


def matching(
    subscriptions: Sequence[Subscription], event_type: str, values: Mapping[str, Any]
) -> list[Subscription]:
    return [
        s for s in subscriptions if subscribes_to(s.event_types, event_type) and passes(s.filters, values)
    ]


def event(event_id: str, event_type: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """An event in OpenAI's webhook event shape: {id, object, type, created_at, data}."""
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": int(at.timestamp()),
        "data": data,
    }


def event_delivery_row(
    event: dict[str, Any],
    url: str,
    now: datetime,
    signing: str = SIGNING,
    **links: int | None,
) -> dict[str, Any]:
    """A due outbox row sending `event` to `url`; `links` are the row's batch_event_id,
    request_id or subscription_id (what it belongs to, for the pages and retention)."""
    return {
        **links,
        "channel": CHANNEL,
        # The event is frozen with its target: every attempt sends the same bytes.
        "target": {"type": CHANNEL, "webhook_url": url, "signing": signing, "event": event},
        "destination": destination_of({"type": CHANNEL, "webhook_url": url}),
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "total_attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


async def queue_event(
    session: AsyncSession,
    event_type: str,
    data: dict[str, Any],
    filters: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    batch_events_url: str | None = None,
) -> int:
    """Queue `event_type` with `data` to every enabled subscription that takes it, and to
    `batch_events_url` when given (BATCH_EVENTS_WEBHOOK_URL, which takes operational events
    too), in the caller's transaction; returns how many deliveries were queued. `filters` are
    the event's model, backend and origin where it has them (a destination's event has none, so
    only subscriptions without those filters get it). The caller wakes the deliverer."""
    now = utcnow()
    found = matching(await enabled(session), event_type, filters or {})
    if not found and batch_events_url is None:
        return 0
    body = event(event_id or f"evt_{event_type}_{int(now.timestamp() * 1000)}", event_type, now, data)
    rows = [event_delivery_row(body, s.url, now, subscription_id=s.id) for s in found]
    if batch_events_url is not None:
        rows.append(event_delivery_row(body, batch_events_url, now))
    await session.execute(insert(Delivery), rows)
    return len(rows)


def request_event_rows(
    subscriptions: Sequence[Subscription], request: Any, status: str, now: datetime
) -> list[dict[str, Any]]:
    """The deliveries of one request's outcome to the subscriptions that take it: succeeded is
    `request.succeeded`, any other end (failed, cancelled, expired) `request.failed`. `request`
    has the request's id, custom_id, model, backend, origin and batch_id."""
    event_type = "request.succeeded" if status == RequestStatus.SUCCEEDED else "request.failed"
    values = {"model": request.model, "backend": request.backend, "origin": request.origin}
    found = matching(subscriptions, event_type, values)
    if not found:
        return []
    data = {
        "id": f"batch_req_{request.id}",
        "custom_id": request.custom_id,
        "status": status,
        "batch_id": request.batch_id,
        **values,
    }
    body = event(f"evt_req_{request.id}_{int(now.timestamp() * 1000)}", event_type, now, data)
    return [event_delivery_row(body, s.url, now, request_id=request.id, subscription_id=s.id) for s in found]
