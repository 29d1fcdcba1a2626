"""Destinations as the UI, the API and /health show them: each with its breaker, its limits and
how many deliveries wait for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.read.cache import per_database
from app.core.rules.errors import NotFound, Problem
from app.db.models import Delivery, Destination, DestinationEvent
from app.db.session import Database
from app.ground.statuses import BreakerState, DeliveryStatus

LISTED = 500  # destinations listed, held ones first
EVENTS = 50  # a destination's latest events shown


@dataclass(frozen=True, slots=True)
class DestinationView:
    id: int
    destination: str
    breaker: str
    consecutive_failures: int
    opened_at: datetime | None
    probe_at: datetime | None  # None while open: held until an operator resumes it
    concurrency: int | None  # the override; None: DELIVERY_DESTINATION_CONCURRENCY
    rate_per_second: float | None  # the override; None: DELIVERY_DESTINATION_RATE
    waiting: int  # deliveries pending or retrying
    failed: int  # deliveries that failed for good (delivery_failed)


def _view(row: Destination, counts: dict[str, dict[str, int]]) -> DestinationView:
    mine = counts.get(row.key, {})
    return DestinationView(
        row.id,
        row.key,
        row.breaker,
        row.consecutive_failures,
        row.opened_at,
        row.probe_at,
        row.concurrency,
        row.rate_per_second,
        mine.get(DeliveryStatus.PENDING, 0) + mine.get(DeliveryStatus.RETRYING, 0),
        mine.get(DeliveryStatus.DELIVERY_FAILED, 0),
    )


async def listing(db: Database) -> list[DestinationView]:
    """Every destination known (seen failing, or set by an operator), held ones first."""
    held_first = case((Destination.breaker == BreakerState.CLOSED, 1), else_=0)
    async with db.transaction() as session:
        rows = (
            await session.execute(select(Destination).order_by(held_first, Destination.key).limit(LISTED))
        ).scalars()
        found = list(rows)
        counts = await _counts(session, [row.key for row in found])
    return [_view(row, counts) for row in found]


async def _counts(session: AsyncSession, keys: list[str]) -> dict[str, dict[str, int]]:
    if not keys:
        return {}
    stmt = (
        select(Delivery.destination, Delivery.status, func.count())
        .where(
            Delivery.destination.in_(keys),
            Delivery.status.in_(
                [DeliveryStatus.PENDING, DeliveryStatus.RETRYING, DeliveryStatus.DELIVERY_FAILED]
            ),
        )
        .group_by(Delivery.destination, Delivery.status)
    )
    counts: dict[str, dict[str, int]] = {}
    for key, status, n in (await session.execute(stmt)).all():
        counts.setdefault(key, {})[status] = n
    return counts


async def detail(db: Database, destination_id: int) -> tuple[DestinationView, list[DestinationEvent]]:
    """One destination and its latest breaker events, newest first."""
    async with db.transaction() as session:
        row = await session.get(Destination, destination_id)
        if row is None:
            raise NotFound(Problem("not_found", "Not found", f"no destination {destination_id}"))
        counts = await _counts(session, [row.key])
        events = (
            await session.execute(
                select(DestinationEvent)
                .where(DestinationEvent.destination_id == destination_id)
                .order_by(DestinationEvent.id.desc())
                .limit(EVENTS)
            )
        ).scalars()
        return _view(row, counts), list(events)


@per_database
async def held(db: Database) -> list[DestinationView]:
    """Destinations whose deliveries are held (breaker open or probing), for /health, /metrics
    and the dashboard; at most CACHE_SECONDS old."""
    async with db.transaction() as session:
        rows = list(
            (
                await session.execute(
                    select(Destination)
                    .where(Destination.breaker != BreakerState.CLOSED)
                    .order_by(Destination.opened_at)
                    .limit(LISTED)
                )
            ).scalars()
        )
        counts = await _counts(session, [row.key for row in rows])
    return [_view(row, counts) for row in rows]
