"""Group commit of intake (app.core.intake.group_commit): concurrent intakes share a transaction,
each is answered after its commit, and a row's failure or a caller's departure is only its own."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError

from app.core.intake import accept as intake
from app.core.intake import group_commit
from app.db.models import Request, table_of
from app.db.session import Database, is_unavailable
from app.ground import metrics
from app.ground.clock import utcnow
from testkit import fast_settings
from testkit.builders import NO_DELIVERY, request_payload


def commits() -> tuple[float, float]:
    """(transactions, rows) written by group commit so far in this process."""
    count = metrics.REGISTRY.get_sample_value("batchgate_intake_commit_rows_count") or 0.0
    rows = metrics.REGISTRY.get_sample_value("batchgate_intake_commit_rows_sum") or 0.0
    return count, rows


def row(custom_id: str, **changes: Any) -> dict[str, Any]:
    values = {
        "scope": "",  # an admin's (no team's)
        "owner": "",
        "custom_id": custom_id,
        "origin": "api",
        "backend": "local",
        "endpoint": "/v1/chat/completions",
        "model": "stand-in",
        "body": {"model": "stand-in"},
        "body_bytes": 10,
        "delivery": NO_DELIVERY,
        "complete_by": None,
        "created_at": utcnow(),
    }
    return values | changes


def written_alone(writer: group_commit.GroupCommit) -> list[str]:
    """The custom_ids `writer` writes row by row from now on (the path of a failed group)."""
    alone: list[str] = []
    write_one = writer._write_one

    async def counted(row: dict[str, Any]) -> group_commit.Outcome:
        alone.append(row["custom_id"])
        return await write_one(row)

    writer._write_one = counted  # type: ignore[method-assign]
    return alone


async def stored(db: Database) -> dict[str, Any]:
    async with db.engine.connect() as connection:
        found = await connection.execute(text("SELECT custom_id, body FROM requests WHERE scope = ''"))
        return {custom_id: body for custom_id, body in found}


async def test_concurrent_intakes_share_one_transaction(db: Database, database_url: str) -> None:
    settings = fast_settings(database_url)
    before = commits()
    accepted = await asyncio.gather(
        *(intake.accept(db, settings, request_payload(f"r-{n}", NO_DELIVERY)) for n in range(50))
    )
    count, rows = commits()
    # All 50 queue before the drain task first runs, so they go in one transaction.
    assert (count - before[0], rows - before[1]) == (1, 50)
    assert len({a.id for a in accepted}) == 50
    assert set(await stored(db)) == {f"r-{n}" for n in range(50)}


async def test_the_same_custom_id_in_one_group_is_stored_once(db: Database, database_url: str) -> None:
    settings = fast_settings(database_url)
    payloads = [request_payload("dup", NO_DELIVERY)] * 3 + [request_payload("dup", NO_DELIVERY, seed=7)]
    answers = await asyncio.gather(
        *(intake.accept(db, settings, p) for p in payloads), return_exceptions=True
    )
    assert isinstance(answers[0], intake.Accepted)  # the first in line wins
    assert [a.same for a in answers[1:] if isinstance(a, intake.Duplicate)] == [True, True, False]
    assert "seed" not in (await stored(db))["dup"]


async def test_a_group_finds_rows_stored_before_it(db: Database) -> None:
    writer = group_commit.writer(db)
    first = await writer.insert(row("old"))
    again, new = await asyncio.gather(writer.insert(row("old")), writer.insert(row("new")))
    assert isinstance(first, group_commit.Inserted) and isinstance(new, group_commit.Inserted)
    assert isinstance(again, group_commit.Taken) and again.same_as(row("old"))
    assert not again.same_as(row("old", body={"model": "other"}))


async def test_a_failing_row_fails_alone(db: Database) -> None:
    writer = group_commit.writer(db)
    rows = [row(f"ok-{n}") for n in range(9)] + [row("bad", origin=None)]  # origin is NOT NULL
    answers = await asyncio.gather(*(writer.insert(r) for r in rows), return_exceptions=True)
    assert isinstance(answers[-1], IntegrityError)
    assert all(isinstance(a, group_commit.Inserted) for a in answers[:-1])
    assert set(await stored(db)) == {f"ok-{n}" for n in range(9)}


async def test_a_caller_that_leaves_still_has_its_row_written(db: Database) -> None:
    writer = group_commit.writer(db)
    staying = asyncio.create_task(writer.insert(row("staying")))
    leaving = asyncio.create_task(writer.insert(row("leaving")))
    await asyncio.sleep(0)  # one turn of the loop: both rows are queued, in one group
    leaving.cancel()
    assert isinstance(await staying, group_commit.Inserted)
    assert leaving.cancelled()
    assert set(await stored(db)) == {"staying", "leaving"}


async def test_an_unreachable_database_fails_the_group_at_once_not_row_by_row() -> None:
    db = Database("postgresql+asyncpg://postgres@127.0.0.1:9/nowhere")  # the discard port: refused
    writer = group_commit.writer(db)
    alone = written_alone(writer)
    try:
        answers = await asyncio.gather(
            *(writer.insert(row(f"r-{n}")) for n in range(5)), return_exceptions=True
        )
    finally:
        await db.dispose()
    assert all(isinstance(a, Exception) and is_unavailable(a) for a in answers)
    assert alone == []  # one connection attempt for the group, not one more per row


async def test_rows_soon_after_a_group_reuse_its_connection(db: Database) -> None:
    # PostgreSQL: a drainer lingers with its connection, so the next rows skip the pool's
    # checkout and its pre-ping (three round trips). SQLite holds no connection between groups.
    if not db.is_postgres:
        return
    checkouts: list[object] = []
    event.listen(db.engine.sync_engine.pool, "checkout", lambda *_: checkouts.append(1))
    writer = group_commit.writer(db)
    assert isinstance(await writer.insert(row("first")), group_commit.Inserted)
    after_first = len(checkouts)
    for n in range(3):
        assert isinstance(await writer.insert(row(f"next-{n}")), group_commit.Inserted)
    assert after_first == 1 and len(checkouts) == 1


async def test_a_group_stores_each_value_as_given(db: Database) -> None:
    # On PostgreSQL the group travels as one JSON text: times keep their instant to the
    # microsecond, JSON its values, NULL stays NULL.
    due = datetime(2031, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=5)))
    body = {"model": "m", "messages": [{"role": "user", "content": 'é ☃ "q" \\ \n'}], "t": 1.5, "n": None}
    given = [row("due", body=body, complete_by=due, body_bytes=77), row("open", body=body)]
    await asyncio.gather(*(group_commit.writer(db).insert(r) for r in given))
    c = table_of(Request).c
    query = select(c.custom_id, c.body, c.complete_by, c.created_at, c.body_bytes)
    async with db.engine.connect() as connection:
        found = {r.custom_id: r for r in await connection.execute(query)}
    assert found["due"].body == body and found["due"].body_bytes == 77
    assert found["due"].complete_by == due and found["open"].complete_by is None
    assert found["open"].created_at == given[1]["created_at"]


async def test_a_sqlite_group_stores_the_text_sqlalchemy_would(db: Database) -> None:
    # On SQLite the group travels as one JSON text too, each value already in the text SQLAlchemy
    # stores (JSON columns through jsontext.dumps, times as DATETIME in UTC): what reads the
    # file raw (the UI's sorting by created_at, a purge by age) finds the same text either way.
    if db.is_postgres:
        return
    due = datetime(2031, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-7)))
    body = {"model": "m", "messages": [{"role": "user", "content": 'é ☃ "q" \\ \n'}], "t": 1.5, "n": None}
    fanout = [{"type": "webhook", "webhook_url": "http://x.test/h"}, {"type": "none"}]
    grouped = [row("g-due", body=body, complete_by=due), row("g-open", delivery=fanout)]
    await asyncio.gather(*(group_commit.writer(db).insert(r) for r in grouped))
    starts = group_commit.insert_sql.STARTS_AS
    alike = [{**r, **starts, "custom_id": "s" + r["custom_id"][1:]} for r in grouped]
    async with db.engine.begin() as connection:
        await connection.execute(table_of(Request).insert(), alike)
    columns = [c for c in group_commit.insert_sql.COLUMNS if c != "custom_id"]
    typed = ", ".join(f"{c}, typeof({c})" for c in columns)
    async with db.engine.connect() as connection:
        found = await connection.exec_driver_sql(f"SELECT custom_id, {typed} FROM requests")
        raw = {r[0]: r[1:] for r in found}
    assert raw["g-due"] == raw["s-due"] and raw["g-open"] == raw["s-open"]
    assert "2031-01-02 10:04:05.000006" in raw["g-due"]


async def test_a_lone_row_goes_as_a_group_of_one(db: Database) -> None:
    # A group of one is the same one statement as any group; SQLAlchemy's row-by-row path is
    # only for a group that failed.
    writer = group_commit.writer(db)
    alone = written_alone(writer)
    before = commits()
    assert isinstance(await writer.insert(row("lone")), group_commit.Inserted)
    assert isinstance(await writer.insert(row("lone", body={"model": "other"})), group_commit.Taken)
    assert alone == []
    assert commits()[0] - before[0] == 2
    assert set(await stored(db)) == {"lone"}


async def test_a_sqlite_group_is_one_trip_to_the_drivers_thread(
    db: Database, driver_trips: list[object]
) -> None:
    # The INSERT commits as it finishes (app.db.session.sqlite_autocommit): no COMMIT after it
    # and no rollback when the connection goes back, each another wait for the busy event loop
    # while the one writer holds the next group back.
    if db.is_postgres:
        return
    writer = group_commit.writer(db)
    await writer.insert(row("warm-up"))  # the pool's connection made first
    driver_trips.clear()
    answers = await asyncio.gather(*(writer.insert(row(f"r-{n}")) for n in range(3)))
    assert all(isinstance(a, group_commit.Inserted) for a in answers)
    assert len(driver_trips) == 1
