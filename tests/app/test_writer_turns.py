"""SQLite's one connection goes to whoever asked first (app.db.turns.FairQueue): a task that gives
it back and asks again at once goes behind those already waiting, and a waiter cancelled just
as the connection was handed to it passes it on instead of losing it."""

from __future__ import annotations

import asyncio

from app.db.session import Database
from testkit import wait_until


async def test_the_connection_goes_to_the_longest_waiter(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    order: list[str] = []
    try:
        first = await db.engine.connect()

        async def turn(name: str) -> None:
            async with db.engine.connect() as connection:
                order.append(name)
                await connection.exec_driver_sql("SELECT 1")

        waiting = [asyncio.create_task(turn(name)) for name in ("b", "c")]
        await wait_until(lambda: len(db.engine.pool._pool._waiters) == 2, timeout=5, what="two waiters")  # type: ignore[attr-defined]
        # Given back and asked for again in one step, as a writer ending one transaction and
        # beginning the next does: behind b and c, not ahead of them.
        await first.close()
        async with db.engine.connect() as connection:
            order.append("a again")
            await connection.exec_driver_sql("SELECT 1")
        await asyncio.wait_for(asyncio.gather(*waiting), timeout=10)
        assert order == ["b", "c", "a again"]
    finally:
        await db.dispose()


async def test_a_waiter_cancelled_as_it_is_handed_the_connection_passes_it_on(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        first = await db.engine.connect()
        cancelled = asyncio.create_task(db.engine.connect().start())
        later = asyncio.create_task(db.engine.connect().start())
        await wait_until(lambda: len(db.engine.pool._pool._waiters) == 2, timeout=5, what="two waiters")  # type: ignore[attr-defined]
        await first.close()  # handed to the first waiter, which is cancelled before it runs
        cancelled.cancel()
        connection = await asyncio.wait_for(later, timeout=10)
        assert (await connection.exec_driver_sql("SELECT 1")).scalar() == 1
        await connection.close()
        assert cancelled.cancelled()
    finally:
        await db.dispose()
