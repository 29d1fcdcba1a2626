"""The circuit breaker of each destination: after DELIVERY_BREAKER_FAILURES failed attempts in a
row it opens and holds the destination's deliveries (never dropped, and no attempt is counted
while they wait); after the cool-down one delivery goes out as a probe; an answer closes it, a
failure opens it again for twice as long (at most an hour).

A failure is an attempt worth retrying (a timeout, a refused connection, a 5xx, a 429). Any other
outcome is the destination answering (a 4xx ends its own delivery but says the receiver is up).
An operator's pause is an open breaker with no probe time: only the operator's resume ends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.destinations import rows
from app.core.rules import states
from app.db.models import Delivery, Destination, DestinationEvent
from app.ground.config import Settings
from app.ground.statuses import BreakerState, Outcome

# A destination down for a day is probed about once an hour, not once a minute.
MAX_COOLDOWN_SECONDS = 3600.0
# The most open breakers one claim probes (each costs a query).
PROBES_PER_CLAIM = 20


@dataclass(slots=True)
class Run:
    """What one group of recorded attempts says about one destination."""

    failures: int = 0  # failed attempts since its last answer in the group (or all of them)
    answered: bool = False  # some attempt in the group was answered
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """A breaker that moved: its event row, and the destination it belongs to."""

    event: DestinationEvent
    destination: str
    probe_at: datetime | None


def tally(outcomes: Iterable[tuple[str, str, str | None]]) -> dict[str, Run]:
    """Group (destination, outcome, error) triples, in the order they ended, by destination."""
    runs: dict[str, Run] = {}
    for destination, outcome, error in outcomes:
        run = runs.setdefault(destination, Run())
        if outcome == Outcome.RETRYABLE_FAILURE:
            run.failures += 1
            run.last_error = error
        else:
            run.answered, run.failures = True, 0
    return runs


def may_move(run: Run, state: str | None, failures: int | None) -> bool:
    """Whether `run` can change a destination whose breaker reads `state` with `failures` in a
    row (None: the destination has no row): a failure always counts; answers only close a breaker
    that is not closed, or count failures in a row back to 0."""
    return bool(run.failures) or (state is not None and (state != BreakerState.CLOSED or bool(failures)))


def held() -> ColumnElement[bool]:
    """Deliveries whose destination's breaker is not closed: the claim leaves them."""
    not_closed = select(Destination.key).where(Destination.breaker != BreakerState.CLOSED)
    return Delivery.destination.in_(not_closed.scalar_subquery())


async def note(
    session: AsyncSession, settings: Settings, runs: Mapping[str, Run], now: datetime
) -> list[Change]:
    """Count the failures in a row of each destination in `runs` and move the breakers they
    open or close; returns the moves."""
    runs = {key: run for key, run in runs.items() if key}
    if not runs:
        return []
    found = await _locked(session, runs)
    if missing := [key for key, run in runs.items() if key not in found and run.failures]:
        await rows.ensure(session, missing)  # a healthy destination needs no row to be counted
        found |= await _locked(session, missing)
    changes = []
    for key, destination in found.items():
        if (change := await _apply(session, settings, destination, runs[key], now)) is not None:
            changes.append(change)
    return changes


async def _locked(session: AsyncSession, keys: Iterable[str]) -> dict[str, Destination]:
    # Locked in key order: two replicas' groups never wait on each other in a cycle.
    stmt = select(Destination).where(Destination.key.in_(list(keys))).order_by(Destination.key)
    return {row.key: row for row in (await session.execute(stmt.with_for_update())).scalars()}


async def _apply(
    session: AsyncSession, settings: Settings, destination: Destination, run: Run, now: datetime
) -> Change | None:
    """Where one destination's breaker goes after a group of attempts."""
    before = destination.consecutive_failures
    destination.consecutive_failures = run.failures if run.answered else before + run.failures
    state, operator_hold = destination.breaker, destination.probe_at is None
    if run.answered and state != BreakerState.CLOSED and not operator_hold:
        return _close(session, destination, "it answered again")
    threshold = settings.delivery_breaker_failures
    if not run.failures or not threshold or destination.consecutive_failures < threshold:
        return None
    if state == BreakerState.CLOSED:
        reason = f"{destination.consecutive_failures} failed attempts in a row; last: {run.last_error}"
    elif state == BreakerState.PROBING:
        reason = f"the probe failed: {run.last_error}"
    else:
        return None  # open already: its probe time stands
    return await _open(session, settings, destination, reason, now)


async def _open(
    session: AsyncSession, settings: Settings, destination: Destination, reason: str, now: datetime
) -> Change:
    event = states.move_breaker(session, destination, BreakerState.OPEN, reason)
    if destination.opened_at is None or event.from_state == BreakerState.CLOSED:
        destination.opened_at = now
    wait = cooldown(settings, await _failed_probes(session, destination))
    destination.probe_at = now + timedelta(seconds=wait)
    return Change(event, destination.key, destination.probe_at)


async def _failed_probes(session: AsyncSession, destination: Destination) -> int:
    """The probes that failed since the breaker opened (this move included): each doubles the
    hold. Counted from its timeline, not from failures in a row, which sends in flight when it
    opened push up too."""
    stmt = select(func.count()).where(
        DestinationEvent.destination_id == destination.id,
        DestinationEvent.from_state == BreakerState.PROBING,
        DestinationEvent.to_state == BreakerState.OPEN,
        DestinationEvent.at >= destination.opened_at,
    )
    return int((await session.execute(stmt)).scalar_one())


def _close(session: AsyncSession, destination: Destination, reason: str) -> Change:
    event = states.move_breaker(session, destination, BreakerState.CLOSED, reason)
    destination.consecutive_failures = 0
    destination.opened_at = destination.probe_at = None
    return Change(event, destination.key, None)


def cooldown(settings: Settings, failed_probes: int) -> float:
    """How long an open breaker holds before its next probe: the cool-down, doubled for each
    failed probe, at most MAX_COOLDOWN_SECONDS."""
    doubled = settings.delivery_breaker_cooldown_seconds * 2 ** min(failed_probes, 20)
    return float(min(doubled, MAX_COOLDOWN_SECONDS))


async def due_probes(session: AsyncSession, now: datetime) -> list[Destination]:
    """Open (or probing, whose probe's answer never came) breakers whose probe time has come,
    locked; replicas skip each other's."""
    stmt = (
        select(Destination)
        .where(
            Destination.breaker.in_([BreakerState.OPEN, BreakerState.PROBING]),
            Destination.probe_at <= now,
        )
        .order_by(Destination.probe_at)
        .limit(PROBES_PER_CLAIM)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


async def probing(
    session: AsyncSession, settings: Settings, destination: Destination, now: datetime
) -> Change:
    """A probe of `destination` was claimed: it is probing until its answer, or until the
    cool-down passes again with none (the prober died: another probe goes)."""
    event = states.move_breaker(
        session, destination, BreakerState.PROBING, "one delivery goes out as a probe"
    )
    wait = cooldown(settings, await _failed_probes(session, destination))
    destination.probe_at = now + timedelta(seconds=wait)
    return Change(event, destination.key, destination.probe_at)


async def pause(session: AsyncSession, key: str, reason: str) -> Change:
    """An operator holds a destination's deliveries until resuming it."""
    destination = await rows.locked(session, key)
    event = states.move_breaker(session, destination, BreakerState.OPEN, reason)
    destination.opened_at = destination.opened_at or event.at
    destination.probe_at = None
    return Change(event, key, None)


async def resume(session: AsyncSession, key: str, reason: str) -> Change | None:
    """An operator sends a destination's deliveries again (None when it was not held)."""
    destination = await rows.locked(session, key)
    if destination.breaker == BreakerState.CLOSED:
        return None
    return _close(session, destination, reason)
