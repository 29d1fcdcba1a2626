"""Numbers every viewer shares (the dashboard's, /health's failing destinations): computed at
most once per CACHE_SECONDS per process and database, however many pages and probes ask."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.db.session import Database

CACHE_SECONDS = 5.0
T = TypeVar("T")


def per_database(compute: Callable[[Database], Awaitable[T]]) -> Callable[[Database], Awaitable[T]]:
    """`compute(db)`, reused while its answer for that database is under CACHE_SECONDS old."""
    answers: dict[str, tuple[float, T]] = {}

    @functools.wraps(compute)
    async def cached(db: Database) -> T:
        hit = answers.get(db.url)
        if hit and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        answer = await compute(db)
        answers[db.url] = (time.monotonic(), answer)
        return answer

    cached.forget = answers.clear  # type: ignore[attr-defined]  # bench.ui times the uncached path
    return cached
