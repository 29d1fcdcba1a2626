"""The delivery outbox: claim due deliveries and build what each sends (app.core.dispatch keeps
the sends in flight, app.core.attempts records every attempt).

Delivery is at least once: a process that dies after sending but before recording sends again
after its lease runs out. Receivers deduplicate on the delivery id (`webhook-id`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, bindparam, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.channels.base import Channel, Message
from app.core import results
from app.core.destinations import breaker, secrets
from app.core.rules import leases, states
from app.db.models import BatchEvent, Delivery, Destination, Request, delivery_public_id
from app.db.session import Database
from app.ground import sealing
from app.ground.clock import utcnow
from app.ground.config import Settings


class Claimed(NamedTuple):
    """What one claim leased: probes of open breakers (sent first), and due deliveries."""

    probes: list[tuple[int, Message]]
    due: list[tuple[int, Message]]


@dataclass(frozen=True, slots=True)
class Terms:
    """What one claim may take: up to `limit` deliveries (the due `probes` first, counted in it),
    none to the destinations in `full`, and those `take` (given each one's destination) keeps."""

    limit: int
    full: Collection[str] = ()
    take: Callable[[str], bool] | None = None
    # The lease outlasts this many sends timing out one after the other: a claimed delivery may
    # wait for sends of its destination before its own (app.core.dispatch).
    sends_per_lease: int = 1
    probes: bool = False


async def claim_due(
    db: Database,
    owner: str,
    settings: Settings,
    channels: Mapping[str, Channel],
    limit: int,
    full: Collection[str] = (),
    take: Callable[[str], bool] | None = None,
    sends_per_lease: int = 1,
) -> list[tuple[int, Message]]:
    """Lease up to `limit` due deliveries of the available channels and build their messages
    (`claim_in`, in a transaction of its own, without probes)."""
    if not any(channel.available for channel in channels.values()):
        return []
    async with db.transaction() as session:
        return (
            await claim_in(session, owner, settings, channels, Terms(limit, full, take, sends_per_lease))
        ).due


async def claim_in(
    session: AsyncSession, owner: str, settings: Settings, channels: Mapping[str, Channel], terms: Terms
) -> Claimed:
    """Lease the due probes (`claim_probes`, with `terms.probes`) and the due deliveries of the
    available channels the terms allow, in the caller's transaction (the step's own, or a
    record's, which commits its refill with it), and build their messages."""
    if not (due := _due(channels)):
        return Claimed([], [])
    where, slowest = due
    claimable = [*where, ~breaker.held()]
    if full := terms.full:
        claimable.append(Delivery.destination.not_in(list(full)))
    rows: Sequence[Any] = []
    # In the claim's transaction, not one of their own: on SQLite each transaction waits its turn
    # for the one connection, and the probes' own (almost always finding none) was a third of
    # the delivery step's time.
    probed = await _claim_probes(session, owner, settings, where, slowest) if terms.probes else []
    limit = terms.limit - len(probed)  # a probe takes a place, as it did claimed on its own
    if limit > 0 and not (full and not await others_due(session, full)):
        rows = await leases.claim_rows(
            session,
            Delivery,
            claimable,
            owner,
            settings.lease_seconds + terms.sends_per_lease * slowest,
            limit,
            order_by=Delivery.next_attempt_at,
            keep=None if (take := terms.take) is None else lambda row: take(row.destination),
            **MESSAGE_READ,
        )
    sealer = sealing.sealer(settings.secrets_key)
    return Claimed(_messages(probed, sealer), _messages(rows, sealer))


def _due(channels: Mapping[str, Channel]) -> tuple[list[ColumnElement[bool]], float] | None:
    """Which deliveries are due to be sent now by the available channels, and the slowest
    channel's timeout; None when no channel can send."""
    open_channels = {name: channel for name, channel in channels.items() if channel.available}
    if not open_channels:
        return None
    where = [
        # Written into the statement: PostgreSQL matches it to ix_deliveries_due_at (partial, on
        # these statuses) and walks the due deliveries in time order up to the claim's limit,
        # where a bound list made it read and sort every due one (asyncpg's generic plans).
        Delivery.status.in_(bindparam("due", list(states.DELIVERY_DUE), literal_execute=True)),
        Delivery.next_attempt_at <= utcnow(),
        Delivery.channel.in_(list(open_channels)),
        in_turn(),
    ]
    return where, max(channel.timeout_seconds for channel in open_channels.values())


# A claim leaving out more full destinations than this runs without asking first.
OTHERS_DUE_HOPS = 8


async def others_due(session: AsyncSession, full: Collection[str]) -> bool:
    """Whether a delivery may be due to a destination outside `full` (False: it is not).

    The claim walks the due deliveries in time order; leaving a full destination out, it read
    every one of its due deliveries to find none of anyone else's (50 ms a claim at 100,000 due
    on SQLite, and a claim follows each record). This hops from due destination to due
    destination instead, in the database's own order, one seek of ix_deliveries_due_destination
    each."""
    now = utcnow()
    for status in states.DELIVERY_DUE:
        after: str | None = None
        for _ in range(OTHERS_DUE_HOPS):
            found = (await session.execute(_next_due_destination(status, after, now))).scalar()
            if found is None:
                break
            if found not in full:
                return True
            after = found
        else:
            return True
    return False


def _next_due_destination(status: str, after: str | None, now: datetime) -> Select[tuple[str]]:
    """The first destination (past `after`) with a delivery of `status` due by `now`."""
    stmt = select(Delivery.destination).where(Delivery.status == status, Delivery.next_attempt_at <= now)
    if after is not None:
        stmt = stmt.where(Delivery.destination > after)
    return stmt.order_by(Delivery.destination).limit(1)


async def claim_probes(
    db: Database, owner: str, settings: Settings, channels: Mapping[str, Channel]
) -> list[tuple[int, Message]]:
    """Lease one due delivery of each destination whose breaker's probe time has come, as its
    probe (app.core.destinations.breaker)."""
    if not (due := _due(channels)):
        return []
    async with db.transaction() as session:
        rows = await _claim_probes(session, owner, settings, *due)
    return _messages(rows, sealing.sealer(settings.secrets_key))


async def _claim_probes(
    session: AsyncSession, owner: str, settings: Settings, where: list[ColumnElement[bool]], slowest: float
) -> list[Any]:
    now, rows = utcnow(), []
    for destination in await breaker.due_probes(session, now):
        claimed = await leases.claim_rows(
            session,
            Delivery,
            [*where, Delivery.destination == destination.key],
            owner,
            settings.lease_seconds + slowest,
            1,
            order_by=Delivery.next_attempt_at,
            **MESSAGE_READ,
        )
        if claimed:
            await breaker.probing(session, settings, destination, now)
            rows += claimed
    return rows


async def release(db: Database, owner: str, ids: Collection[int]) -> None:
    """Give back our leases on claimed deliveries that will not be sent now (their destination's
    breaker opened): they wait, unattempted, with the rest of its deliveries."""
    async with db.transaction() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.id.in_(list(ids)), Delivery.leased_by == owner)
            .values(**leases.RELEASED)
            .execution_options(synchronize_session=False)
        )


# What a claim reads of each delivery it leases, in its own statement (no round trip more per
# claim): the delivery, its request's result and its destination's signing secrets. Plain rows,
# not ORM objects: building those was a tenth of a RabbitMQ delivery's CPU.
MESSAGE_READ: dict[str, Any] = {
    "columns": (
        Delivery.destination,
        Delivery.target,
        Delivery.total_attempts,
        Request.id,
        Request.custom_id,
        Request.response,
        Request.error,
        *secrets.SIGNING_COLUMNS,
    ),
    "outerjoins": (
        (Request, Delivery.request_id == Request.id),
        (Destination, Destination.key == Delivery.destination),
    ),
}


def _messages(rows: Sequence[Any], sealer: sealing.Sealer) -> list[tuple[int, Message]]:
    """What each claimed delivery sends, by row id (rows as MESSAGE_READ reads them): header
    values opened, and signed with the secrets of its destination."""
    now = utcnow()
    return [(row.claimed_id, _message(row, sealer, secrets.signing(row, sealer, now))) for row in rows]


@functools.cache
def in_turn() -> ColumnElement[bool]:
    """A result's delivery, or a batch event whose batch has no earlier event still waiting
    (to be queued, or pending or retrying to the same destination): a batch's events reach each
    receiver in order, one at a time, even across retries and replicas, and a receiver that is
    down holds back only its own. An earlier event that failed for good (delivery_failed) no
    longer holds the later ones back."""
    this, earlier, earlier_delivery = aliased(BatchEvent), aliased(BatchEvent), aliased(Delivery)
    # Correlated two levels up (SQLAlchemy correlates one on its own): without it, `deliveries`
    # was a table of its own in the inner FROM, and an earlier event waiting for any receiver
    # held back the later ones to all of them.
    earlier_waits = (
        exists()
        .where(
            earlier_delivery.batch_event_id == earlier.id,
            earlier_delivery.destination == Delivery.destination,
            earlier_delivery.status.in_(states.DELIVERY_DUE),
        )
        .correlate(Delivery, earlier)
    )
    return or_(
        Delivery.batch_event_id.is_(None),
        ~exists().where(
            this.id == Delivery.batch_event_id,
            earlier.batch_id == this.batch_id,
            earlier.id < this.id,
            or_(earlier.announce, earlier_waits),
        ),
    )


def _message(row: Any, sealer: sealing.Sealer, signing_secrets: tuple[str, ...]) -> Message:
    """What one attempt sends: the request's result line, or the batch event frozen in the target."""
    # An event (a batch's, a request's to a subscription) is frozen in its target.
    content = row.target["event"] if "event" in row.target else results.output_line(row)
    return Message(
        delivery_id=delivery_public_id(row.claimed_id),
        custom_id=row.custom_id,
        attempt=row.total_attempts + 1,
        body=json.dumps(content, separators=(",", ":")).encode(),
        target=sealer.open_headers(row.target),
        destination=row.destination,
        signing_secrets=signing_secrets,
    )
