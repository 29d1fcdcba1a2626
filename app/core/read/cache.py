"""Numbers every viewer shares (the dashboard's, /health's failing destinations): computed at
most once per CACHE_SECONDS per process and database, however many pages and probes ask."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from app.db.session import Database

CACHE_SECONDS = 5.0
T = TypeVar("T")


class PerDatabase(Generic[T]):
    """`compute(db)`, reused while its answer for that database is under CACHE_SECONDS old."""

    def __init__(self, compute: Callable[[Database], Awaitable[T]]) -> None:
        self._compute = compute
        self._answers: dict[str, tuple[float, T]] = {}
        functools.update_wrapper(self, compute)

    async def __call__(self, db: Database) -> T:
        hit = self._answers.get(db.url)
        if hit and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        answer = await self._compute(db)
        self._answers[db.url] = (time.monotonic(), answer)
        return answer

    def forget(self) -> None:
        """Drop every answer: bench.ui times the uncached path."""
        self._answers.clear()


def per_database(compute: Callable[[Database], Awaitable[T]]) -> PerDatabase[T]:
    return PerDatabase(compute)
