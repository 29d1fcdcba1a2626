"""The operator's changes to one destination: its limits, and holding or releasing its deliveries."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import notices
from app.core.destinations import breaker, limits, rows
from app.core.rules.errors import InvalidInput, NotFound, Problem
from app.db.models import Destination
from app.db.session import Database
from app.ground.clock import utcnow

CONCURRENCY_MAX = 10_000
RATE_MAX = 100_000.0


def checked_limits(concurrency: Any, rate_per_second: Any) -> tuple[int | None, float | None]:
    """The limits an operator asks for, refused with a problem each when out of range (None:
    the default)."""
    problems = []
    if concurrency is not None and (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= CONCURRENCY_MAX
    ):
        problems.append(
            Problem(
                "invalid_concurrency",
                "Invalid concurrency",
                f"concurrency is a whole number from 1 to {CONCURRENCY_MAX}, or null for the default",
                "/concurrency",
            )
        )
    if rate_per_second is not None and (
        isinstance(rate_per_second, bool)
        or not isinstance(rate_per_second, int | float)
        or not 0 <= rate_per_second <= RATE_MAX
    ):
        problems.append(
            Problem(
                "invalid_rate",
                "Invalid rate",
                f"rate_per_second is from 0 (no limit) to {RATE_MAX:g}, or null for the default",
                "/rate_per_second",
            )
        )
    if problems:
        raise InvalidInput(*problems)
    return concurrency, None if rate_per_second is None else float(rate_per_second)


async def key_by_id(session: AsyncSession, destination_id: int) -> str:
    row = await session.get(Destination, destination_id)
    if row is None:
        raise NotFound(Problem("not_found", "Not found", f"no destination {destination_id}"))
    return row.key


async def set_limits(db: Database, key: str, concurrency: Any, rate_per_second: Any) -> Destination:
    """Override a destination's concurrency and rate (None: back to the defaults); made when new."""
    concurrency, rate = checked_limits(concurrency, rate_per_second)
    async with db.transaction() as session:
        row = await rows.locked(session, key)
        row.concurrency, row.rate_per_second, row.updated_at = concurrency, rate, utcnow()
    limits.changed(db)
    return row


async def pause(db: Database, key: str, via: str, events_url: str | None) -> Destination:
    """Hold a destination's deliveries until it is resumed (announced at `events_url`)."""
    async with db.transaction() as session:
        change = await breaker.pause(session, key, f"paused by the operator ({via})")
        await _announce(session, events_url, change)
        return await rows.locked(session, key)


async def resume(db: Database, key: str, via: str, events_url: str | None) -> Destination:
    """Send a held destination's deliveries again: its breaker closes (announced at `events_url`)."""
    async with db.transaction() as session:
        change = await breaker.resume(session, key, f"resumed by the operator ({via})")
        await _announce(session, events_url, change)
        return await rows.locked(session, key)


async def _announce(session: AsyncSession, url: str | None, change: breaker.Change | None) -> None:
    if change is not None:
        await session.flush()  # the event row's id names the notice
        await notices.queue(session, url, notices.breaker_events([change]), change.event.at)
