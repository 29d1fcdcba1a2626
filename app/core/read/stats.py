"""Dashboard numbers: counts by status, requests per minute, delivery success rate.

Counting millions of requests is not free, and every open dashboard polls, so the numbers are
computed at most once per CACHE_SECONDS per process and shared by every viewer. The grouped
counts read the (status, …) indexes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from app.core.read.cache import per_database
from app.core.rules.states import DELIVERY_ENDED, REQUEST_FINISHED, DeliveryStatus
from app.core.runtime.clock import utcnow
from app.db.models import Batch, Delivery, Request
from app.db.session import Database

CHART_MINUTES = 60


@dataclass(frozen=True, slots=True)
class Dashboard:
    batches: dict[str, int]
    requests: dict[str, int]
    deliveries: dict[str, int]
    per_minute: list[int]  # oldest first; the last entry is the current minute
    computed_at: datetime

    @property
    def delivery_success_rate(self) -> float | None:
        """Delivered out of all deliveries that ended; None before any ended."""
        ended = sum(self.deliveries.get(status, 0) for status in DELIVERY_ENDED)
        return self.deliveries.get(DeliveryStatus.DELIVERED, 0) / ended if ended else None

    @property
    def in_flight(self) -> int:
        return sum(n for status, n in self.requests.items() if status not in REQUEST_FINISHED)


@per_database
async def dashboard(db: Database) -> Dashboard:
    """The dashboard's numbers, at most CACHE_SECONDS old."""
    now = utcnow()
    since = (now - timedelta(minutes=CHART_MINUTES - 1)).replace(second=0, microsecond=0)
    minute = (
        func.date_trunc("minute", Request.created_at)
        if db.is_postgres
        else func.substr(Request.created_at, 1, 16)
    )
    async with db.transaction() as session:
        batches = await session.execute(select(Batch.status, func.count()).group_by(Batch.status))
        requests = await session.execute(select(Request.status, func.count()).group_by(Request.status))
        deliveries = await session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        buckets = await session.execute(
            select(minute, func.count()).where(Request.created_at >= since).group_by(minute)
        )
        result = Dashboard(
            batches={s: int(n) for s, n in batches},
            requests={s: int(n) for s, n in requests},
            deliveries={s: int(n) for s, n in deliveries},
            per_minute=_per_minute(buckets.all(), since),
            computed_at=now,
        )
    return result


def _per_minute(buckets: list[tuple[object, int]], since: datetime) -> list[int]:
    counts = [0] * CHART_MINUTES
    for bucket, n in buckets:
        # PostgreSQL gives a datetime; SQLite the stored text cut at the minute.
        at = bucket if isinstance(bucket, datetime) else datetime.fromisoformat(f"{bucket}:00+00:00")
        at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
        index = int((at - since).total_seconds() // 60)
        if 0 <= index < CHART_MINUTES:
            counts[index] += int(n)
    return counts
