"""Dashboard numbers: counts by status, requests per minute, delivery success rate.

Counting millions of requests is not free, and every open dashboard polls, so the numbers are
computed at most once per CACHE_SECONDS per process and shared by every viewer, and on PostgreSQL
the big finished totals are estimates, shown as such (see `dashboard`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.read.cache import per_database
from app.core.rules.states import DELIVERY_DUE, DELIVERY_ENDED, REQUEST_FINISHED
from app.db.models import Batch, Delivery, Request
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.statuses import DeliveryStatus, RequestStatus

CHART_MINUTES = 60
# On PostgreSQL, a finished status with more rows than this shows the planner's estimate.
EXACT_UP_TO = 10_000
REQUEST_OPEN = tuple(s.value for s in RequestStatus if s not in REQUEST_FINISHED)
REQUEST_DONE = tuple(s.value for s in RequestStatus if s in REQUEST_FINISHED)
DELIVERY_DONE = tuple(s.value for s in DeliveryStatus if s not in DELIVERY_DUE)


@dataclass(frozen=True, slots=True)
class Dashboard:
    batches: dict[str, int]
    requests: dict[str, int]
    deliveries: dict[str, int]
    per_minute: list[int]  # oldest first; the last entry is the current minute
    computed_at: datetime
    # (table, status) pairs whose number is PostgreSQL's estimate, not a count (see `_totals`).
    estimated: frozenset[tuple[str, str]] = frozenset()

    @property
    def delivery_success_rate(self) -> float | None:
        """Delivered out of all deliveries that ended; None before any ended."""
        ended = sum(self.deliveries.get(status, 0) for status in DELIVERY_ENDED)
        return self.deliveries.get(DeliveryStatus.DELIVERED, 0) / ended if ended else None

    @property
    def success_rate_estimated(self) -> bool:
        return any(("deliveries", status) in self.estimated for status in DELIVERY_ENDED)

    @property
    def in_flight(self) -> int:
        return sum(n for status, n in self.requests.items() if status not in REQUEST_FINISHED)


@per_database
async def dashboard(db: Database) -> Dashboard:
    """The dashboard's numbers, at most CACHE_SECONDS old.

    In-flight statuses are always counted. On PostgreSQL a finished status is counted up to
    EXACT_UP_TO rows; beyond that its number is the planner's estimate, marked in `estimated`
    (counting a million index entries per refresh is what made the dashboard slow). SQLite has no
    statistics to estimate from, so it counts everything.
    """
    now = utcnow()
    since = (now - timedelta(minutes=CHART_MINUTES - 1)).replace(second=0, microsecond=0)
    async with db.transaction() as session:
        batches = await session.execute(select(Batch.status, func.count()).group_by(Batch.status))
        estimated: set[tuple[str, str]] = set()
        requests = await _totals(
            session, db.is_postgres, Request.status, REQUEST_OPEN, REQUEST_DONE, estimated
        )
        deliveries = await _totals(
            session, db.is_postgres, Delivery.status, DELIVERY_DUE, DELIVERY_DONE, estimated
        )
        per_minute = await _per_minute(session, since)
    return Dashboard(
        batches={s: int(n) for s, n in batches},
        requests=requests,
        deliveries=deliveries,
        per_minute=per_minute,
        computed_at=now,
        estimated=frozenset(estimated),
    )


@per_database
async def exact_counts(db: Database) -> dict[str, dict[str, int]]:
    """Every table's rows by status, all counted (for /metrics), at most CACHE_SECONDS old."""
    counts: dict[str, dict[str, int]] = {}
    async with db.transaction() as session:
        for name, column in (
            ("batches", Batch.status),
            ("requests", Request.status),
            ("deliveries", Delivery.status),
        ):
            rows = await session.execute(select(column, func.count()).group_by(column))
            counts[name] = {s: int(n) for s, n in rows}
    return counts


async def _totals(
    session: AsyncSession,
    postgres: bool,
    column: Any,
    open_statuses: Iterable[str],
    done_statuses: Iterable[str],
    estimated: set[tuple[str, str]],
) -> dict[str, int]:
    """Rows by status: open statuses counted (an index range each), done ones too on SQLite; on
    PostgreSQL a done status is counted up to EXACT_UP_TO, then estimated (added to `estimated`)."""
    if not postgres:
        return {s: int(n) for s, n in await session.execute(select(column, func.count()).group_by(column))}
    counts = {
        s: int(n)
        for s, n in await session.execute(
            select(column, func.count()).where(column.in_(list(open_statuses))).group_by(column)
        )
    }
    table = column.class_.__tablename__
    for status in done_statuses:
        capped = select(column).where(column == status).limit(EXACT_UP_TO + 1).subquery()
        n = int(await session.scalar(select(func.count()).select_from(capped)) or 0)
        if n > EXACT_UP_TO:
            plan = await session.scalar(
                text(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} WHERE status = :status"),
                {"status": status},
            )
            plan = json.loads(plan) if isinstance(plan, str) else plan
            n = max(n, int(plan[0]["Plan"]["Plan Rows"]))
            estimated.add((table, status))
        if n:
            counts[status] = n
    return counts


async def _per_minute(session: AsyncSession, since: datetime) -> list[int]:
    """Requests created in each minute of the chart: one index range count per minute, in one
    statement (grouping by a truncated timestamp costs about four times as much on PostgreSQL)."""
    edges = [since + timedelta(minutes=i) for i in range(CHART_MINUTES + 1)]
    counts = [
        select(func.count())
        .where(Request.created_at >= start, Request.created_at < end)
        .scalar_subquery()
        .label(f"m{i}")
        for i, (start, end) in enumerate(itertools.pairwise(edges))
    ]
    row = (await session.execute(select(*counts))).one()
    return [int(n) for n in row]
