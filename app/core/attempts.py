"""The record side of the outbox: every attempt that ended becomes an attempts row (the audit
trail), moves its delivery on (delivered, retrying later, failed for good) and counts against its
destination's breaker (app.core.dispatch records what ended in groups; app.core.delivery claims).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.base import Message, SendResult
from app.core import notices
from app.core.destinations import breaker
from app.core.rules import leases, states, storable
from app.db import driver
from app.db.models import Delivery, DeliveryAttempt, Destination
from app.db.models.ids import table_of
from app.db.session import Database
from app.ground import metrics
from app.ground.clock import utcnow
from app.ground.config import Settings
from app.ground.identity import process_name
from app.ground.statuses import BreakerState, DeliveryStatus, Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sent:
    message: Message
    row_id: int
    result: SendResult
    started_at: datetime
    duration_ms: int


# The deliveries a record may record (still leased to us), locked, with their destination's
# breaker as it stands (read, not locked: a group of answers to a healthy destination cannot move
# it, and its row is then left alone; on PostgreSQL a breaker another replica moves meanwhile
# stays as that replica left it, as if this record had committed first). Built once.
_LEASED = (
    select(
        Delivery.id,
        Delivery.status,
        Delivery.attempts,
        Delivery.total_attempts,
        Delivery.destination,
        Destination.breaker,
        Destination.consecutive_failures,
    )
    .outerjoin(Destination, Destination.key == Delivery.destination)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)), Delivery.leased_by == bindparam("owner"))
    .with_for_update(of=Delivery)
)
ATTEMPT_COLUMNS = (
    "delivery_id",
    "number",
    "started_at",
    "duration_ms",
    "outcome",
    "http_status",
    "error",
    "response_excerpt",
    "worker",
)


@driver.cached
def _attempts_insert() -> Any:
    """The attempts rows' INSERT, through the driver (app.db.driver): SQLAlchemy's executemany
    bound each row's values in Python, a share of every record's time."""
    table = table_of(DeliveryAttempt)
    return insert(table).values({column: bindparam(driver.PREFIX + column) for column in ATTEMPT_COLUMNS})


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a record changed that the dispatcher acts on."""

    earliest: datetime | None  # the earliest retry or probe it scheduled
    held: frozenset[str]  # destinations whose breaker it opened: their claimed deliveries wait


async def record(
    db: Database,
    owner: str,
    settings: Settings,
    sent: Sequence[Sent],
    then: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> Recorded:
    """Record the attempts, move each delivery on and count them against their destinations'
    breakers; `then` runs last in the same transaction (the dispatcher's refill: both commit or
    neither)."""
    if not sent:
        return Recorded(None, frozenset())
    now = utcnow()
    async with db.transaction() as session:
        # Only deliveries still leased to us: if our lease ran out, whoever owns it now records.
        leased = await session.execute(_LEASED, {"ids": [s.row_id for s in sent], "owner": owner})
        current = {row.id: row for row in leased.all()}
        outcomes, attempts = [], []
        for item in sent:
            # A receiver's words are outside text: made storable once, for both rows.
            item = replace(item, result=_storable(item.result))
            if (row := current.get(item.row_id)) is not None:
                attempts.append(_attempt_row(row.id, row.total_attempts + 1, item))
                outcomes.append(_outcome_row(row, item.result, settings, now))
        await states.set_delivery_outcomes(session, outcomes)
        await driver.executemany(session, _attempts_insert(), attempts)
        recorded = [item for item in sent if item.row_id in current]
        breakers = {row.destination: (row.breaker, row.consecutive_failures) for row in current.values()}
        changes = await _note_destinations(session, settings, recorded, outcomes, breakers, now)
        if then is not None:
            await then(session)
    _report(recorded, outcomes)
    retries = [o["next_attempt_at"] for o in outcomes if o["next_attempt_at"] is not None]
    retries += [change.probe_at for change in changes if change.probe_at is not None]
    # A batch event that ended lets its batch's next event go: deliver again now, not a tick later.
    events = {item.row_id for item in sent if "event" in item.message.target}
    if any(o["id"] in events and o["status"] in states.DELIVERY_ENDED for o in outcomes):
        retries.append(now)
    opened = frozenset(c.destination for c in changes if c.event.to_state == BreakerState.OPEN)
    return Recorded(min(retries, default=None), opened)


async def _note_destinations(
    session: AsyncSession,
    settings: Settings,
    recorded: Sequence[Sent],
    outcomes: Sequence[dict[str, Any]],
    breakers: Mapping[str, tuple[str | None, int | None]],
    now: datetime,
) -> list[breaker.Change]:
    """Count the attempts against their destinations' breakers (as `breakers` read them), and
    announce what moved and which results' deliveries failed for good."""
    triples = ((item.message.destination, item.result.outcome, item.result.error) for item in recorded)
    runs = {
        key: run
        for key, run in breaker.tally(triples).items()
        if breaker.may_move(run, *breakers.get(key, (None, None)))
    }
    changes = await breaker.note(session, settings, runs, now)
    if changes:
        await session.flush()  # the breaker events' ids name the notices
    events = notices.breaker_events(changes)
    for item, outcome in zip(recorded, outcomes, strict=True):
        if outcome["status"] == DeliveryStatus.DELIVERY_FAILED and "event" not in item.message.target:
            events.append(
                notices.exhausted_event(
                    item.row_id, item.message.custom_id, outcome["attempts"], outcome["last_error"], now
                )
            )
    url = settings.batch_events_webhook_url
    await notices.queue(session, str(url) if url else None, events, now)
    return changes


def _report(recorded: Sequence[Sent], outcomes: Sequence[dict[str, Any]]) -> None:
    """Count the recorded attempts, and log each delivery that has failed for good."""
    for item, outcome in zip(recorded, outcomes, strict=True):
        metrics.DELIVERY_ATTEMPTS.labels(item.message.target["type"], item.result.outcome).inc()
        if outcome["status"] == DeliveryStatus.DELIVERY_FAILED:
            log.warning(
                "delivery %s failed for good after %s attempts: %s",
                item.message.delivery_id,
                outcome["attempts"],
                outcome["last_error"],
                extra={"delivery_id": item.message.delivery_id, "custom_id": item.message.custom_id},
            )


def _storable(result: SendResult) -> SendResult:
    return replace(
        result, error=storable.text(result.error), response_excerpt=storable.text(result.response_excerpt)
    )


def _attempt_row(delivery_id: int, number: int, item: Sent) -> dict[str, Any]:
    """The delivery_attempts row of one send: the audit trail keeps every attempt."""
    result = item.result
    return {
        "delivery_id": delivery_id,
        "number": number,
        "started_at": item.started_at,
        "duration_ms": item.duration_ms,
        "outcome": result.outcome,
        "http_status": result.http_status,
        "error": result.error,
        "response_excerpt": result.response_excerpt,
        "worker": process_name(),
    }


def _outcome_row(row: Any, result: SendResult, settings: Settings, now: datetime) -> dict[str, Any]:
    """Where one delivery goes after an attempt: delivered, failed for good, or retrying later."""
    tries = row.attempts + 1
    next_attempt_at = None
    if result.outcome == Outcome.SUCCESS:
        status = DeliveryStatus.DELIVERED
    elif result.outcome == Outcome.PERMANENT_FAILURE or tries >= settings.delivery_max_attempts:
        status = DeliveryStatus.DELIVERY_FAILED
    else:
        status = DeliveryStatus.RETRYING
        next_attempt_at = now + timedelta(seconds=retry_delay(settings, tries, result))
    delivered = status == DeliveryStatus.DELIVERED
    return {
        "id": row.id,
        "from_status": row.status,
        "status": status,
        "attempts": tries,
        "total_attempts": row.total_attempts + 1,
        "next_attempt_at": next_attempt_at,
        "last_error": None if delivered else result.error,
        "delivered_at": now if delivered else None,
        **leases.RELEASED,
    }


def retry_delay(settings: Settings, attempts: int, result: SendResult) -> float:
    """The wait after attempt `attempts`: its DELIVERY_RETRY_SCHEDULE entry (the last one repeats)
    less up to a fifth at random, so that a receiver's backlog does not come back all at once; or
    the receiver's Retry-After, up to the schedule's longest wait."""
    waits = settings.retry_waits
    if result.retry_after_seconds is not None:
        return min(result.retry_after_seconds, max(waits))
    return random.uniform(0.8, 1.0) * waits[min(attempts, len(waits)) - 1]
