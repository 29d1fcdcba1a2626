"""Group commit for intake: the rows that arrive while a commit is in flight share the next one.

Each accepted request is committed before it is answered. One transaction per request paid a
commit each (on SQLite a sync to disk, on PostgreSQL a WAL flush and three round trips), and under
load a request spent most of its time waiting for its turn at that. Here concurrent callers queue
their rows; one drain task writes everything queued in one transaction and answers each caller
after the commit. Nothing waits for a window: a lone row is written at once, and rows that arrive
meanwhile go together into the next transaction. A group that fails is written again row by row,
so a row's failure is only its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import ARRAY, String, Text, TextualSelect, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.intake import insert_sql
from app.db.session import Database, is_unavailable, sqlite_autocommit
from app.ground import metrics

GROUP_MAX_ROWS = 500  # rows per transaction; more wait for the next one
IN_FLIGHT_POSTGRES = 4  # transactions at once on PostgreSQL (of its pool's 10 connections)
# How long a PostgreSQL drainer that found nothing to write keeps its connection for the next
# rows: short, as a connection kept idle is not pinged before its next use.
LINGER_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Inserted:
    """The row is stored under this id."""

    id: int


@dataclass(frozen=True, slots=True)
class Taken:
    """The custom_id was already stored, with this request: to tell a resend from a mistake."""

    endpoint: str
    body: Any
    delivery: Any

    def same_as(self, row: dict[str, Any], opened: Callable[[Any], Any] | None = None) -> bool:
        """Whether the stored request is `row` again (a resend), as intake stores it; `opened`
        gives a delivery config's plain header values (sealed ones differ on every sealing)."""
        if (self.endpoint, self.body) != (row["endpoint"], row["body"]):
            return False
        if opened is None:
            return bool(self.delivery == row["delivery"])
        return bool(opened(self.delivery) == opened(row["delivery"]))


Outcome = Inserted | Taken
Key = tuple[str, str]  # (scope, custom_id): what is unique
# A row waiting to be written, with the future its outcome is set on.
Queued = tuple[dict[str, Any], asyncio.Future[Outcome]]

# One row: written as text() so SQLAlchemy compiles it once and caches it (the dialect-specific
# insert().on_conflict_do_nothing() has no cache key and was recompiled on every call). ON
# CONFLICT DO NOTHING makes a taken custom_id an answer rather than an exception; the syntax is
# the same on PostgreSQL and SQLite (3.35+).
_INSERT_ONE = text(insert_sql.insert_values([insert_sql.named_markers()], "id")).bindparams(
    bindparam("body", type_=JsonB),
    bindparam("delivery", type_=JsonB),
    bindparam("complete_by", type_=DateTimeUTC(timezone=True)),
    bindparam("created_at", type_=DateTimeUTC(timezone=True)),
)
# What a taken custom_id holds, to tell a resend from a different request.
_STORED = (
    text(f"{insert_sql.STORED_BY_CUSTOM_ID} AND custom_id IN :ids")
    .bindparams(bindparam("ids", expanding=True))
    .columns(custom_id=String(), endpoint=String(), body=JsonB, delivery=JsonB)
)

# On PostgreSQL the same two statements take arrays, so their text is the same whatever the
# group's size: asyncpg prepares each distinct text, and groups of every size from 1 to 64
# overflowed its statement cache, preparing again nearly every time (bench.http_intake: 385
# requests/s, against 1,260 this way).
_STORED_PG = (
    text(f"{insert_sql.STORED_BY_CUSTOM_ID} AND custom_id = ANY(:ids)")
    .bindparams(bindparam("ids", type_=ARRAY(Text)))
    .columns(custom_id=String(), endpoint=String(), body=JsonB, delivery=JsonB)
)
# Sent through asyncpg itself, outside any transaction block: one statement is its own
# transaction, so a group costs one round trip (SQLAlchemy's BEGIN, pre-ping and COMMIT were four
# more, and a quarter of intake's CPU time on PostgreSQL). The group goes as one JSON text that
# the server unpacks (json_to_recordset): asyncpg encoding twelve arrays, a value at a time, was
# 10% of intake's CPU time; msgspec writes the one text in a fraction of it.
_PG_TYPES = {
    "scope": "text", "owner": "text", "custom_id": "text", "origin": "text", "backend": "text",
    "endpoint": "text", "model": "text", "body": "jsonb", "body_bytes": "integer", "delivery": "jsonb",
    "complete_by": "timestamptz", "created_at": "timestamptz",
}  # fmt: skip
_INSERT_MANY_PG = insert_sql.insert_select(
    {column: column for column in insert_sql.GIVEN},
    f"json_to_recordset($1::json) AS u({', '.join(f'{name} {kind}' for name, kind in _PG_TYPES.items())})",
    "scope, custom_id, id",
)
# msgspec only (datetimes as RFC 3339): a row it refuses (text no database stores, which intake
# refuses before) fails its group, which is then written row by row through SQLAlchemy.
_rows_json = msgspec.json.Encoder().encode


class GroupCommit:
    """The queue of rows waiting to be written to one database, and the tasks that drain it."""

    def __init__(self, db: Database, loop: asyncio.AbstractEventLoop) -> None:
        self.db = db
        self.loop = loop
        # SQLite writes through one connection, so one transaction at a time. PostgreSQL takes
        # several: while one waits for its commit to reach the disk, the next is being sent.
        self.in_flight = IN_FLIGHT_POSTGRES if db.is_postgres else 1
        self._queue: list[Queued] = []
        self._drainers: set[asyncio.Task[None]] = set()
        self._taking = 0  # drainers that will still take rows (not yet on their way out)
        self._idle: collections.deque[asyncio.Future[bool]] = collections.deque()  # lingering ones
        self._writing: set[Key] = set()  # (scope, custom_id) of the rows in a transaction now

    async def insert(self, row: dict[str, Any]) -> Outcome:
        """Store `row` (a new request of the native API) once its transaction commits; Taken
        when its custom_id was already stored."""
        answer: asyncio.Future[Outcome] = self.loop.create_future()
        self._queue.append(({**insert_sql.STARTS_AS, **row}, answer))
        self._wake_a_drainer()
        # A caller that goes away (a client hangs up) cancels only its answer, not its row: the
        # row stays queued and is written as it would have been a moment later, like a commit
        # that finished as the client left (the drainer answers only futures not yet done).
        return await answer

    def _wake_a_drainer(self) -> None:
        """A lingering drainer takes the new row, else a new one starts (up to in_flight)."""
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        if self._taking < self.in_flight:
            self._taking += 1
            task = self.loop.create_task(self._drain())
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)

    async def _drain(self) -> None:
        group: list[Queued] = []
        held = _Held()
        lingered_out = False
        try:
            while True:
                if group := self._take():
                    try:
                        await self._write(group, held)
                    finally:
                        self._writing -= {key_of(row) for row, _ in group}
                    group, lingered_out = [], False
                elif held.connection is None or lingered_out:
                    break  # nothing queued (taken again just now, after the linger ran out)
                else:
                    lingered_out = not await self._linger()
        finally:
            # From here on this drainer takes nothing, so a row queued meanwhile starts another
            # (no await before this line since the queue was last found empty).
            self._taking -= 1
            # Reached with work left only when this task is cancelled (the loop shutting down):
            # nobody waits forever for an answer.
            for _, answer in group + ([] if self._taking else self._queue):
                if not answer.done():
                    answer.cancel()
            await held.release()

    async def _linger(self) -> bool:
        """Wait up to LINGER_SECONDS for a row, keeping the drainer's connection (a checkout
        pings the server first: three round trips, 6% of intake's CPU when every short burst
        of rows checked one out again). False when none came."""
        waiter: asyncio.Future[bool] = self.loop.create_future()
        timer = self.loop.call_later(LINGER_SECONDS, _settle, waiter)
        self._idle.append(waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                self._idle.remove(waiter)

    def _take(self) -> list[Queued]:
        """Up to GROUP_MAX_ROWS queued rows, oldest first, none under a custom_id that is queued
        before it or being written: such a row waits for a later group, to find the first one
        stored (so the first in line wins, as if the rows had been written one by one)."""
        group: list[Queued] = []
        rest: list[Queued] = []
        seen = set(self._writing)
        for item in self._queue:
            key = key_of(item[0])
            if len(group) < GROUP_MAX_ROWS and key not in seen:
                group.append(item)
                self._writing.add(key)
            else:
                rest.append(item)
            seen.add(key)
        self._queue = rest
        return group

    async def _write(self, group: list[Queued], held: _Held) -> None:
        # Every group, one of a single row too, goes as one statement; only a failed group is
        # written again row by row, each row its own transaction through SQLAlchemy.
        try:
            if self.db.is_postgres:
                outcomes = await held.write([row for row, _ in group], self.db)
            else:
                outcomes = await self._write_many([row for row, _ in group])
        except Exception as exc:
            if is_unavailable(exc):
                # The database is out of reach, not refusing a row: row by row, each would wait
                # out its own connect timeout in turn.
                for _, answer in group:
                    if not answer.done():
                        answer.set_exception(exc)
                return
            # Else written again row by row below: each caller gets its own row's outcome.
        else:
            for (_, answer), outcome in zip(group, outcomes, strict=True):
                if not answer.done():
                    answer.set_result(outcome)
            return
        for row, answer in group:
            try:
                outcome = await self._write_one(row)
            except Exception as exc:
                if not answer.done():
                    answer.set_exception(exc)
            else:
                if not answer.done():
                    answer.set_result(outcome)

    async def _write_many(self, rows: list[dict[str, Any]]) -> list[Outcome]:
        """SQLite: one INSERT of the group as one JSON text (json_each), skipping a taken
        custom_id; only the skipped rows are looked up. Sent to aiosqlite itself, as its own
        transaction (sqlite_autocommit): one trip to aiosqlite's thread for the INSERT, its
        COMMIT and the connection's return to the pool. Each trip ends only when the busy event
        loop gets to its callback while the one writer holds the next group back; a statement
        through SQLAlchemy was four trips (cursor, execute, fetch, close), and the COMMIT and
        the pool's rollback on return two more. A group the JSON cannot carry fails, and is
        then written row by row, as any failed group is."""
        group = insert_sql.sqlite_group_json(rows)
        try:
            async with self.db.engine.connect() as connection:
                # The one statement is its own transaction: stored and synced when it answers.
                written = await sqlite_autocommit(connection, insert_sql.INSERT_MANY_SQLITE, (group,))
                inserted = {(scope, cid): new_id for scope, cid, new_id in written}
                keys = [key_of(row) for row in rows]
                skipped = [key for key in keys if key not in inserted]
                taken = await _taken_keys(connection, skipped) if skipped else {}
        except BaseException as exc:
            # Sent past SQLAlchemy, so its events (app.db.writes) do not see this write: told here.
            self.db.writes.refused(exc)
            raise
        self.db.writes.committed()
        metrics.INTAKE_COMMIT_ROWS.observe(len(rows))
        return [taken.get(key) or Inserted(inserted[key]) for key in keys]

    async def _write_one(self, row: dict[str, Any]) -> Outcome:
        async with self.db.engine.begin() as connection:
            new_id = (await connection.execute(_INSERT_ONE, row)).scalar_one_or_none()
            if new_id is None:
                taken = await find_taken(connection, row["scope"], [row["custom_id"]])
        metrics.INTAKE_COMMIT_ROWS.observe(1)
        return Inserted(new_id) if new_id is not None else taken[row["custom_id"]]


def key_of(row: dict[str, Any]) -> Key:
    """Where a row's custom_id must be unique, and the custom_id."""
    return row["scope"], row["custom_id"]


async def _taken_keys(
    connection: AsyncConnection, keys: list[Key], query: TextualSelect = _STORED
) -> dict[Key, Taken]:
    """find_taken for keys of any scopes (a group is nearly always of one)."""
    by_scope: dict[str, list[str]] = {}
    for scope, custom_id in keys:
        by_scope.setdefault(scope, []).append(custom_id)
    found: dict[Key, Taken] = {}
    for scope, custom_ids in by_scope.items():
        taken = await find_taken(connection, scope, custom_ids, query)
        found.update(((scope, custom_id), held) for custom_id, held in taken.items())
    return found


async def find_taken(
    connection: AsyncConnection, scope: str, custom_ids: list[str], query: TextualSelect = _STORED
) -> dict[str, Taken]:
    """What the stored requests of `scope` holding these custom_ids hold, by custom_id."""
    if not custom_ids:
        return {}
    stored = await connection.execute(query, {"scope": scope, "ids": custom_ids})
    return {found.custom_id: Taken(found.endpoint, found.body, found.delivery) for found in stored}


class _Held:
    """A drainer's PostgreSQL connection, kept for the groups it writes one after another and
    while it lingers: a checkout pings the server first (pool_pre_ping), three round trips."""

    def __init__(self) -> None:
        self.connection: AsyncConnection | None = None

    async def write(self, rows: list[dict[str, Any]], db: Database) -> list[Outcome]:
        """Insert blindly (ON CONFLICT DO NOTHING), then look up only the rows it skipped."""
        group = _rows_json(rows).decode()  # first: a row refused here is no write refused
        try:
            if self.connection is None:
                self.connection = await db.engine.connect()
            connection = self.connection
            driver: Any = (await connection.get_raw_connection()).driver_connection
            # No transaction block: the one statement commits on its own before it answers.
            written = await driver.fetch(_INSERT_MANY_PG, group)
            inserted = {(scope, custom_id): new_id for scope, custom_id, new_id in written}
            keys = [key_of(row) for row in rows]
            skipped = [key for key in keys if key not in inserted]
            taken = {}
            if skipped:
                taken = await _taken_keys(connection, skipped, _STORED_PG)
                await connection.commit()  # ends the lookup's transaction before the next INSERT
        except BaseException as exc:
            # Sent past SQLAlchemy, so its events (app.db.writes) do not see this write: told here.
            db.writes.refused(exc)
            await self.release(broken=True)
            raise
        db.writes.committed()
        metrics.INTAKE_COMMIT_ROWS.observe(len(rows))
        return [taken.get(key) or Inserted(inserted[key]) for key in keys]

    async def release(self, broken: bool = False) -> None:
        """Give the connection back (a broken one is discarded, never reused)."""
        connection, self.connection = self.connection, None
        if connection is None:
            return
        with contextlib.suppress(Exception):  # a connection already gone needs no closing
            if broken:
                await connection.invalidate()
            await connection.close()


def _settle(waiter: asyncio.Future[bool]) -> None:
    """A linger ran out with no row for it."""
    if not waiter.done():
        waiter.set_result(False)


_writers: weakref.WeakKeyDictionary[Database, GroupCommit] = weakref.WeakKeyDictionary()


def writer(db: Database) -> GroupCommit:
    """The group commit of `db` in the running event loop."""
    loop = asyncio.get_running_loop()
    found = _writers.get(db)
    if found is None or found.loop is not loop:
        found = _writers[db] = GroupCommit(db, loop)
    return found
