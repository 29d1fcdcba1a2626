"""The deliverer's wake-ups under uvloop, the loop `batchgate serve` runs: a retry due now wakes
the delivery step at once. uvloop's call_later(0) gives a Handle without when(), which made the
next wake-up raise AttributeError (seen as "could not wake the delivery step" in
bench.hanging_destination; before the recorder caught it, it stopped the dispatcher's records)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import uvloop

from app.core.driver.worker import Worker


def test_a_retry_due_now_or_soon_wakes_the_deliverer_under_uvloop() -> None:
    woken: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        third = asyncio.Event()

        def wake() -> None:
            woken.append(loop.time())
            if len(woken) == 3:
                third.set()

        worker = SimpleNamespace(settings=SimpleNamespace(tick_seconds=1.0), _timers=[], wake_deliver=wake)
        now = datetime.now(UTC)
        Worker._wake_at(worker, now - timedelta(seconds=1))  # type: ignore[arg-type]
        Worker._wake_at(worker, now)  # type: ignore[arg-type]
        Worker._wake_at(worker, now + timedelta(seconds=0.05))  # type: ignore[arg-type]
        assert len(woken) == 2  # the two due ones at once
        await asyncio.wait_for(third.wait(), timeout=5)  # the soon one by its timer

    uvloop.run(main())
