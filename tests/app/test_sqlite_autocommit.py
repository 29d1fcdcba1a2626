"""app.db.session.sqlite_autocommit: one statement on SQLite as its own transaction, committed
when it answers, in one trip to aiosqlite's thread; and the pool's reset that still rolls back
every connection handed back inside a transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.db.session import Database, sqlite_autocommit

INSERT = "INSERT INTO scratch (key, value) VALUES (?, ?) RETURNING key"


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/scratch.db")
    async with database.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE scratch (key TEXT PRIMARY KEY, value TEXT)"))
    yield database
    await database.dispose()


def read_from_outside(db: Database) -> dict[str, Any]:
    """The rows as another connection to the file sees them (committed ones only)."""
    path = db.url.split(":///", 1)[1]
    with sqlite3.connect(path) as other:
        return dict(other.execute("SELECT key, value FROM scratch").fetchall())


async def test_the_statement_is_committed_when_it_answers(lite: Database) -> None:
    async with lite.engine.connect() as connection:
        rows = await sqlite_autocommit(connection, INSERT, ("k", '"v"'))
        assert rows == [("k",)]
        # Still holding the connection: another one already sees the row, so it is committed.
        assert read_from_outside(lite) == {"k": '"v"'}
        assert not connection.in_transaction()
        # The connection keeps its durability and its transaction handling for the next user.
        assert (await connection.exec_driver_sql("PRAGMA synchronous")).scalar() == 2  # FULL
        driver: Any = (await connection.get_raw_connection()).driver_connection
        assert driver.isolation_level == ""
        await connection.rollback()


async def test_it_is_one_trip_to_the_drivers_thread(lite: Database, driver_trips: list[object]) -> None:
    async with lite.engine.connect() as connection:  # the pool's connection made first
        await connection.exec_driver_sql("SELECT 1")
        await connection.rollback()
    driver_trips.clear()
    async with lite.engine.connect() as connection:
        await sqlite_autocommit(connection, INSERT, ("k", "1"))
    # The statement and its commit; no COMMIT and no rollback on return after it.
    assert len(driver_trips) == 1
    assert read_from_outside(lite) == {"k": "1"}


async def test_a_failed_statement_leaves_nothing_and_no_transaction(lite: Database) -> None:
    async with lite.engine.connect() as connection:
        await sqlite_autocommit(connection, INSERT, ("k", "1"))
        with pytest.raises(sqlite3.IntegrityError):
            await sqlite_autocommit(connection, INSERT, ("k", "2"))
        assert (await connection.exec_driver_sql("SELECT value FROM scratch")).scalar_one() == "1"
        await connection.rollback()
    assert read_from_outside(lite) == {"k": "1"}


async def test_it_refuses_a_connection_inside_a_transaction(lite: Database) -> None:
    async with lite.engine.begin() as connection:
        await connection.execute(text("INSERT INTO scratch (key, value) VALUES ('a', '1')"))
        with pytest.raises(RuntimeError):
            await sqlite_autocommit(connection, INSERT, ("k", "1"))
    assert read_from_outside(lite) == {"a": "1"}


async def test_a_connection_handed_back_inside_a_transaction_is_rolled_back(lite: Database) -> None:
    # The pool's own rollback on return is replaced by _reset_sqlite: a write the driver began
    # past SQLAlchemy, never committed, still goes when the connection goes back.
    async with lite.engine.connect() as connection:
        await sqlite_autocommit(connection, INSERT, ("first", "1"))  # marks it committed
        driver: Any = (await connection.get_raw_connection()).driver_connection
        await driver.execute("INSERT INTO scratch (key, value) VALUES ('left', '1')")
        assert driver.in_transaction
    async with lite.engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert not driver.in_transaction
    assert read_from_outside(lite) == {"first": "1"}
