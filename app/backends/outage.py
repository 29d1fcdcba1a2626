"""Telling an inference server that is down from a request that fails on its own.

When every call fails (connection refused, 5xx, a server that stopped answering), failing each
line after its few retries would fail a whole batch during a restart of llama.cpp or a crashed
vLLM engine. So a line whose tries are spent asks whether the server is down: nothing usable
came from it since the line began failing, and it fails a cheap probe too (a request the server
chokes on, or a long generation, is no outage). If it is, the line waits and tries again; a line
that failed during an outage that is over tries again at once. A line waits at most
LOCAL_OUTAGE_MAX_SECONDS from its first failure, and no line waits once an outage is that old,
so no batch waits forever. One usable answer from any line ends the outage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import UTC, datetime

from app.net.outbound import backoff_seconds

log = logging.getLogger(__name__)

RECHECK_MAX_SECONDS = 30.0


class ServerOutage:
    """What this process knows of its inference server's health, from the calls it makes."""

    def __init__(self, max_seconds: float, recheck_base_seconds: float) -> None:
        self.max_seconds = max_seconds
        self.recheck_base_seconds = max(recheck_base_seconds, 0.05)
        self.last_answer = -math.inf  # monotonic time of the last usable answer
        self.since: float | None = None  # monotonic time the current outage was noticed
        self.since_wall: datetime | None = None
        self.ended = -math.inf  # monotonic time the last outage ended
        self.last_error = ""
        self.waiting = 0

    def answered(self) -> None:
        """A call got a usable answer (anything but a connection error, timeout or 408/429/5xx)."""
        now = self.last_answer = time.monotonic()
        if self.since is not None:
            log.warning("the inference server answers again after %.0f s", now - self.since)
            self.since = self.since_wall = None
            self.ended = now

    def answered_since(self, moment: float) -> bool:
        return self.last_answer >= moment

    def overlapped(self, moment: float) -> bool:
        """Whether an outage lasted at some time since `moment` (monotonic)."""
        return self.since is not None or self.ended >= moment

    def begin(self, error: str) -> None:
        """The server failed a line and a probe: it is down (if it was not already)."""
        self.last_error = error
        if self.since is None:
            self.since, self.since_wall = time.monotonic(), datetime.now(UTC)
            log.warning("the inference server is failing every call (%s); lines wait for it", error)

    def too_old(self, first_failure: float) -> bool:
        """Whether a line failing since `first_failure`, or the outage itself, has waited long enough."""
        now = time.monotonic()
        started = min(first_failure, self.since if self.since is not None else math.inf)
        return now - started >= self.max_seconds

    def recheck_after(self, round_: int) -> float:
        """Seconds a waiting line waits before its `round_`-th try again (1-based)."""
        return min(RECHECK_MAX_SECONDS, backoff_seconds(self.recheck_base_seconds, round_))

    async def wait(self, seconds: float) -> None:
        self.waiting += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.waiting -= 1

    def describe(self) -> str | None:
        """What /health says while an outage lasts, or None."""
        if self.since is None or self.since_wall is None:
            return None
        return (
            f"every call failing since {self.since_wall:%H:%M:%S} UTC, {self.waiting} lines waiting: "
            f"{self.last_error}"
        )
