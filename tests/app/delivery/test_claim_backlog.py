"""A claim that leaves out the destinations at their share asks first whether anyone else has a
delivery due, one index seek a destination, instead of walking every due delivery of the full
ones (app.core.delivery.others_due), on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core import delivery
from app.db.models import Delivery
from app.db.session import Database
from app.ground.clock import utcnow
from testkit import fast_settings

CHANNELS = {"webhook": SimpleNamespace(available=True, timeout_seconds=5.0)}
# The full destination sorts before the other one, and after it when they swap roles: the hops
# go past a full destination either way.
FULL, OTHER = "webhook:http://Full.example", "webhook:http://other.example"


def due(destination: str, in_seconds: float = -1) -> dict[str, Any]:
    now = utcnow()
    return {
        "channel": "webhook",
        "target": {"type": "webhook", "url": f"{destination.removeprefix('webhook:')}/hook", "event": {}},
        "destination": destination,
        "status": "pending",
        "attempts": 0,
        "total_attempts": 0,
        "next_attempt_at": now + timedelta(seconds=in_seconds),
        "created_at": now,
    }


async def add(db: Database, rows: list[dict[str, Any]]) -> list[int]:
    async with db.engine.begin() as conn:
        returning = insert(Delivery).returning(Delivery.id, sort_by_parameter_order=True)
        return list((await conn.execute(returning, rows)).scalars())


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL the engine runs meanwhile, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def claim(db: Database, database_url: str, full: set[str]) -> list[int]:
    settings = fast_settings(database_url)
    claimed = await delivery.claim_due(db, "test", settings, CHANNELS, 10, full)  # type: ignore[arg-type]
    return [row_id for row_id, _ in claimed]


async def test_a_claim_with_only_full_destinations_due_reads_none_of_their_deliveries(
    db: Database, database_url: str
) -> None:
    await add(db, [due(FULL) for _ in range(20)] + [due(OTHER, in_seconds=3600)])
    with statements(db.engine) as seen:
        assert await claim(db, database_url, {FULL}) == []
    # The claim's own statement (the one walking the due deliveries in time order) never ran.
    assert not [sql for sql, _ in seen if "claimed_id" in sql]


async def test_another_destinations_due_delivery_is_still_claimed(db: Database, database_url: str) -> None:
    ids = await add(db, [due(FULL) for _ in range(5)] + [due(OTHER)])
    assert await claim(db, database_url, {FULL}) == [ids[-1]]
    # And with the other one full instead: the hops go past it the other way round.
    assert await claim(db, database_url, {OTHER}) == ids[:5]


async def test_the_hop_is_one_seek_of_the_due_destination_index(db: Database) -> None:
    probe = delivery._next_due_destination("pending", FULL, utcnow())
    async with db.engine.connect() as conn:
        sql = str(probe.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if db.is_postgres:
            # A small table is read whole; the test asks which index serves the probe at all.
            await conn.exec_driver_sql("SET enable_seqscan = off")
            plan = " ".join(row[0] for row in await conn.exec_driver_sql("EXPLAIN " + sql))
            assert "Index Only Scan using ix_deliveries_due_destination" in plan, plan
            assert "Sort" not in plan, plan
        else:
            plan = " ".join(row[-1] for row in await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            seek = "USING COVERING INDEX ix_deliveries_due_destination (status=? AND destination>?)"
            assert seek in plan, plan
            assert "TEMP B-TREE" not in plan, plan


async def test_postgres_walks_the_due_deliveries_in_time_order(db: Database, database_url: str) -> None:
    """PostgreSQL reads the due deliveries through the partial ix_deliveries_due_at, which the
    claim's literal statuses match, up to its limit: no sort of every due delivery."""
    if not db.is_postgres:
        return  # SQLite reads (status, next_attempt_at) in order one status at a time
    await add(db, [due(FULL) for _ in range(5)])
    with statements(db.engine) as seen:
        await claim(db, database_url, set())
    sql, parameters = next((sql, parameters) for sql, parameters in seen if "claimed_id" in sql)
    assert "deliveries.status IN ('pending', 'retrying')" in sql, sql
    async with db.engine.connect() as conn:
        driver: Any = (await conn.get_raw_connection()).driver_connection
        await driver.execute("SET enable_seqscan = off")  # a small table is read whole otherwise
        plan = " ".join(row[0] for row in await driver.fetch("EXPLAIN " + sql, *parameters))
    assert "Index Scan using ix_deliveries_due_at" in plan, plan
