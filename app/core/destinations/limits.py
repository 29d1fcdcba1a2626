"""Each destination's limits: DELIVERY_DESTINATION_CONCURRENCY and DELIVERY_DESTINATION_RATE, or
the operator's overrides on its row, read again every few seconds: a change applies at once in
the process that made it and within REFRESH_SECONDS on every other replica."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import or_, select

from app.db.models import Destination
from app.db.session import Database
from app.ground.config import Settings

REFRESH_SECONDS = 5.0
# When an operator last changed a destination's limits in this process, by database (id): this
# process's dispatcher reads them again at once, other replicas within REFRESH_SECONDS.
_changed_at: dict[int, float] = {}


def changed(db: Database) -> None:
    """Limits were changed here: read them again before the next claim."""
    _changed_at[id(db)] = time.monotonic()


@dataclass(frozen=True, slots=True)
class Limits:
    concurrency: int  # sends in flight at once
    rate: float  # sends started per second; 0: no limit


class DestinationLimits:
    """The limits of every destination, as this process last read them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._overrides: dict[str, tuple[int | None, float | None]] = {}
        self._read_at = -REFRESH_SECONDS

    async def refresh(self, force: bool = False) -> None:
        """Read the overrides again when they are REFRESH_SECONDS old (or now, with `force`)."""
        fresh = time.monotonic() - self._read_at < REFRESH_SECONDS
        if not force and fresh and _changed_at.get(id(self.db), -REFRESH_SECONDS) < self._read_at:
            return
        stmt = select(Destination.key, Destination.concurrency, Destination.rate_per_second).where(
            or_(Destination.concurrency.is_not(None), Destination.rate_per_second.is_not(None))
        )
        # As of before the read: a change committed while it ran is read again next time.
        started = time.monotonic()
        async with self.db.transaction() as session:
            rows = (await session.execute(stmt)).all()
        self._overrides = {key: (concurrency, rate) for key, concurrency, rate in rows}
        self._read_at = started

    def of(self, settings: Settings, destination: str) -> Limits:
        """`destination`'s limits now; its concurrency never above DELIVERY_CONCURRENCY."""
        concurrency, rate = self._overrides.get(destination, (None, None))
        return Limits(
            min(concurrency or settings.delivery_destination_concurrency, settings.delivery_concurrency),
            settings.delivery_destination_rate if rate is None else rate,
        )


class Bucket:
    """A token bucket: `rate` sends a second, bursts of up to one second's worth. (aiolimiter's
    limiter waits for capacity; the dispatcher must instead pass a destination by and start the
    next one's send, so it asks without waiting.)"""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self) -> bool:
        """Take a token when one is there."""
        self._fill()
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def wait(self) -> float:
        """Seconds until the next token."""
        self._fill()
        return max(0.0, (1 - self.tokens) / self.rate)

    def _fill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
