"""Engine and session setup for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import CursorResult, UpdateBase, event
from sqlalchemy import exc as exc_types
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolResetState

from app.db.writes import WriteHealth
from app.ground import jsontext


def create_engine(database_url: str, sqlite_synchronous: str = "full") -> AsyncEngine:
    """Create the engine with the settings each database needs. On SQLite, `full` syncs every
    commit to disk, so an answered request survives power loss; `normal` may lose the last
    commits then (never on a process crash) for faster writes."""
    # hide_parameters: a database error (logged as an internal error) would otherwise quote the
    # row it failed on, with request bodies and webhook header values.
    if database_url.startswith("sqlite"):
        _ensure_sqlite_dir(database_url)
        # One connection: every write is serialised through it, so concurrent requests queue
        # in the pool instead of failing with "database is locked".
        engine = create_async_engine(
            database_url,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
            # A connection handed back is rolled back by _reset_sqlite, which skips the rollback
            # (a trip to aiosqlite's thread) when its last user committed and said so.
            pool_reset_on_return=None,
            connect_args={"timeout": 30},
            hide_parameters=True,
            json_serializer=jsontext.dumps,
            # Bodies read back (an OpenAI batch's input file) decode through msgspec too.
            json_deserializer=jsontext.loads,
        )
        event.listen(engine.sync_engine, "connect", functools.partial(_sqlite_pragmas, sqlite_synchronous))
        event.listen(engine.sync_engine, "reset", _reset_sqlite)
        return engine
    return create_async_engine(
        database_url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        hide_parameters=True,
        json_serializer=jsontext.dumps,
        json_deserializer=jsontext.loads,
    )


# A new database frees the pages of deleted rows bit by bit (a purge runs incremental_vacuum)
# instead of keeping them forever. It only takes on a database without tables, so it comes
# before anything that writes the file (journal_mode=WAL does); on an existing database it is a
# no-op until one VACUUM (docs/operations.md). Migrations, which create the tables, set it too.
SQLITE_AUTO_VACUUM = "PRAGMA auto_vacuum=INCREMENTAL"
AUTO_VACUUM_INCREMENTAL = 2  # what `PRAGMA auto_vacuum` reads on such a database


_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}  # the only values spliced into the pragma


def _sqlite_pragmas(synchronous: str, dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # First: the pragmas after it may need the file's lock, which a connection being replaced
    # can still hold; without a busy timeout they fail at once with "database is locked".
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute(SQLITE_AUTO_VACUUM)
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={_SYNCHRONOUS[synchronous]}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# Set in a pooled connection's info by sqlite_autocommit: its last statement committed on its own
# and nothing of it is left to roll back when it goes back to the pool.
_COMMITTED = "batchgate.committed"


def _reset_sqlite(dbapi_connection: Any, record: Any, state: PoolResetState) -> None:
    """SQLAlchemy's rollback-on-return (what `pool_reset_on_return=None` turned off), except
    for a connection sqlite_autocommit left without a transaction."""
    committed = record.info.pop(_COMMITTED, False)
    if not state.asyncio_safe or state.transaction_was_reset:
        return  # as SQLAlchemy's own reset: nothing to do, or nothing it may do here
    if committed and not record.driver_connection.in_transaction:
        return
    dbapi_connection.rollback()


async def sqlite_autocommit(connection: AsyncConnection, sql: str, parameters: Sequence[Any]) -> list[Any]:
    """Run one statement on SQLite as its own transaction and answer its rows: committed (with
    the connection's `synchronous`, so as durably as a COMMIT) when this returns, in one trip to
    aiosqlite's thread. Python's sqlite3 would open a transaction before it and need a second
    trip for the COMMIT, and a third for the pool's rollback when the connection goes back.
    `connection` must have no transaction open (SQLAlchemy's or the driver's)."""
    if connection.in_transaction():
        raise RuntimeError("sqlite_autocommit needs a connection outside any transaction")
    pooled = await connection.get_raw_connection()
    driver: Any = pooled.driver_connection
    if driver.in_transaction:
        raise RuntimeError("sqlite_autocommit needs a connection outside any transaction")
    level = driver.isolation_level
    # None: sqlite3 opens no transaction, so the statement commits as it finishes (fetchall steps
    # it to the end). Set and restored here, in the event loop's thread, while the connection's
    # own thread is idle: every earlier call on it was awaited.
    driver.isolation_level = None
    try:
        rows = list(await driver.execute_fetchall(sql, parameters))
    finally:
        driver.isolation_level = level
    pooled.info[_COMMITTED] = True
    return rows


def _ensure_sqlite_dir(database_url: str) -> None:
    path = database_url.split(":///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


class Database:
    """The engine plus a session factory; core functions open their own transactions."""

    def __init__(self, database_url: str, sqlite_synchronous: str = "full") -> None:
        self.url = database_url
        self.engine = create_engine(database_url, sqlite_synchronous)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.writes = WriteHealth()  # whether writes commit now (/health)
        self.writes.watch(self.engine)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def autovacuum_off(self) -> bool:
        """PostgreSQL with autovacuum off: every status change leaves a dead row version behind,
        and the status indexes' scans slow down with them until someone runs VACUUM."""
        if not self.is_postgres:
            return False
        async with self.engine.connect() as connection:
            return (await connection.exec_driver_sql("SHOW autovacuum")).scalar() == "off"

    async def reclaim_space(self, pages: int) -> int:
        """SQLite with incremental auto-vacuum: give up to `pages` free pages back to the file
        system; returns how many free pages are left. A no-op (0) on PostgreSQL, whose autovacuum
        reuses the space, and on a SQLite database created without incremental auto-vacuum."""
        if self.engine.dialect.name != "sqlite":
            return 0
        async with self.engine.connect() as connection:
            if (await connection.exec_driver_sql("PRAGMA auto_vacuum")).scalar() != AUTO_VACUUM_INCREMENTAL:
                return 0
            driver: Any = (await connection.get_raw_connection()).driver_connection
            # Python's sqlite3 steps an execute()d pragma once, which frees one page; a script is
            # stepped to the end. No transaction is open here, so the script commits nothing else.
            await driver.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
            left = (await connection.exec_driver_sql("PRAGMA freelist_count")).scalar()
        return int(left or 0)


# SQLSTATE classes that say the server is unreachable for now, not that the statement is wrong:
# connection exceptions, insufficient resources (too many clients, a full disk), shutting down or
# starting up.
# And writes refused for now: a read-only database (25006), an I/O error (58030).
UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "25006", "58030")


async def rows_changed(session: AsyncSession, statement: UpdateBase) -> int:
    """Run an UPDATE or DELETE and answer how many rows it changed."""
    result = await session.execute(statement)
    # SQLAlchemy 2.0 types every `execute` answer as a Result; the one of an UPDATE or DELETE is
    # a CursorResult, the kind that counts rows.
    if not isinstance(result, CursorResult):
        raise TypeError(f"{type(statement).__name__} answered a {type(result).__name__}, not a row count")
    return result.rowcount


def is_unavailable(exc: BaseException) -> bool:
    """True when the database could not be reached or was too busy, rather than refusing the
    statement: the same work is worth trying again later."""
    if isinstance(exc, exc_types.DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, (exc_types.OperationalError, exc_types.InterfaceError))
    ):
        return True
    # asyncpg raises its own errors bare while connecting, and SQLAlchemy wraps them later on.
    causes = [exc, getattr(exc, "orig", None), getattr(getattr(exc, "orig", None), "__cause__", None)]
    for cause in causes:
        code = getattr(cause, "sqlstate", None)
        if isinstance(code, str) and code.startswith(UNAVAILABLE_SQLSTATES):
            return True
    return isinstance(exc, (OSError, TimeoutError, exc_types.TimeoutError, exc_types.DisconnectionError))
