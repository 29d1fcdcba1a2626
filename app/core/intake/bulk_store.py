"""Storing bulk intake's rows: one transaction a chunk, through the driver, with the database's
fastest way to insert many rows that still skips taken custom_ids and returns the new ids.

PostgreSQL: the chunk's ids taken from the sequence first, then the rows COPYed (binary, their own
transaction) straight into `requests`: the rows are encoded by asyncpg's C codecs, parsed once by
the server and inserted in batches. A COPY cannot skip a taken custom_id, so when one is taken
(a resend, or another body's) the chunk is stored again the slower way: COPY into a temporary
table, then `INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING` from it. SQLite: multi-row
`INSERT ... VALUES (...), (...) ON CONFLICT DO NOTHING RETURNING`, as many rows a statement as
its variable limit allows. Both commit before returning, so what they return is durable.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
from datetime import datetime
from typing import Any, NamedTuple

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.intake import insert_sql
from app.core.intake.group_commit import Taken, find_taken
from app.core.rules.owners import Caller
from app.db.session import Database

# New ids for a chunk, from the identity column's sequence (a failed COPY leaves a gap). Named,
# not looked up: pg_get_serial_sequence() in this statement ran once a row (25 ms for 5,000).
_PG_IDS = "SELECT nextval('requests_id_seq') FROM generate_series(1, $1)"
# The columns of a COPYed record, in the order _copy_postgres builds it: the new id, then the
# columns every intake INSERT names (insert_sql.COLUMNS).
_PG_COLUMNS = ("id", *insert_sql.COLUMNS)
_STARTS = tuple(insert_sql.STARTS_AS.values())
_PG_TAKEN = "uq_requests_scope_custom_id"  # a custom_id already stored in the scope
_UNIQUE_VIOLATION = "23505"
# One per connection, emptied by every commit. Its columns are Row's first eight.
_PG_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS bulk_intake"
    " (c text, b text, e text, m text, j jsonb, n integer, d jsonb, t timestamptz) ON COMMIT DELETE ROWS"
)
_PG_STAGED = ("c", "b", "e", "m", "j", "n", "d", "t")
_PG_BEGIN = "BEGIN; " + _PG_STAGING  # one round trip
# ORDER BY keeps the ids in input order, as the batcher takes pending requests oldest id first.
_PG_INSERT = insert_sql.insert_select(
    dict(
        zip(insert_sql.GIVEN, ("$3", "$4", "c", "$1", "b", "e", "m", "j", "n", "d", "t", "$2"), strict=True)
    ),
    "bulk_intake ORDER BY ctid",
    "id, custom_id",
)

# SQLite allows 32,766 variables a statement (since 3.32); 8 a row, and 4 shared.
_SQLITE_ROWS = 4000

_KEPT_PAGE = 500


class Row(NamedTuple):
    """One request to store: its columns (the JSON already encoded) and, last, its body as
    decoded (to compare with a row that holds the same custom_id)."""

    custom_id: str
    backend: str
    endpoint: str
    model: str
    body_json: str
    body_bytes: int
    delivery: str  # JSON
    complete_by: datetime | None
    body: dict[str, Any]


_COLUMNS = 8  # Row's stored fields


async def insert(
    db: Database,
    rows: list[Row],
    origin: str,
    created_at: datetime,
    caller: Caller,
    held: AsyncConnection | None = None,
) -> dict[str, int]:
    """Insert `rows` of `caller`'s as pending in one transaction, skipping custom_ids already
    taken in its scope; returns the new ids by custom_id (committed when this returns). On
    PostgreSQL, through `held` when given (a connection kept for a body's chunks)."""
    if not rows:
        return {}
    if db.is_postgres:
        if held is not None:
            return await _insert_postgres(held, rows, origin, created_at, caller)
        async with db.engine.connect() as connection:
            return await _insert_postgres(connection, rows, origin, created_at, caller)
    return await _insert_sqlite(db, rows, origin, created_at, caller)


async def _insert_postgres(
    connection: AsyncConnection, rows: list[Row], origin: str, created_at: datetime, caller: Caller
) -> dict[str, int]:
    driver: Any = (await connection.get_raw_connection()).driver_connection
    try:
        return await _copy_postgres(driver, rows, origin, created_at, caller)
    except Exception as exc:  # asyncpg's UniqueViolationError, read as app.db reads errors
        taken = getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION
        if not taken or getattr(exc, "constraint_name", None) != _PG_TAKEN:
            raise
    # Some custom_id is taken in the scope: nothing of the COPY was stored (its ids are left
    # unused); the statement that skips taken ones stores the rest.
    return await _stage_postgres(driver, rows, origin, created_at, caller)


async def _copy_postgres(
    driver: Any, rows: list[Row], origin: str, created_at: datetime, caller: Caller
) -> dict[str, int]:
    """COPY the rows into `requests` under ids taken first: one transaction, all or nothing
    (measured about 1.2 times as fast as the staging table's INSERT ... SELECT, docs/benchmarks.md)."""
    # Sorted: the ids follow input order, as the batcher takes pending requests oldest id first.
    ids = sorted(map(operator.itemgetter(0), await driver.fetch(_PG_IDS, len(rows))))
    scope, owner, starts = caller.scope, caller.owner, _STARTS
    records = [
        (new_id, scope, owner, r[0], origin, r[1], r[2], r[3], r[4], r[5], r[6], r[7], *starts, created_at)
        for new_id, r in zip(ids, rows, strict=True)
    ]
    # Outside a transaction block, a COPY is its own transaction: committed when it returns.
    await driver.copy_records_to_table("requests", records=records, columns=_PG_COLUMNS)
    return {r.custom_id: new_id for new_id, r in zip(ids, rows, strict=True)}


async def _stage_postgres(
    driver: Any, rows: list[Row], origin: str, created_at: datetime, caller: Caller
) -> dict[str, int]:
    """COPY into the staging table and INSERT ... SELECT from it, skipping taken custom_ids."""
    # A transaction of asyncpg's own (SQLAlchemy's has not begun: nothing ran through it), begun
    # by hand with the staging table's CREATE in the same round trip.
    await driver.execute(_PG_BEGIN)
    try:
        records = [r[:_COLUMNS] for r in rows]
        await driver.copy_records_to_table("bulk_intake", records=records, columns=_PG_STAGED)
        inserted = await driver.fetch(_PG_INSERT, origin, created_at, caller.scope, caller.owner)
        await driver.execute("COMMIT")
    except Exception:
        # A connection that cannot roll back is discarded by its holder (bulk_chunks), as is one
        # whose chunk was cancelled midway.
        if not driver.is_closed() and driver.is_in_transaction():
            with contextlib.suppress(Exception):
                await driver.execute("ROLLBACK")
        raise
    return {custom_id: new_id for new_id, custom_id in inserted}


@functools.lru_cache(maxsize=4)  # a full chunk's statement, and a last one's
def _sqlite_statement(count: int) -> str:
    # ?1 to ?4 (origin, created_at, scope, owner) are shared by every row; its own values follow.
    shared = {"origin": "?1", "created_at": "?2", "scope": "?3", "owner": "?4"}
    own = [c for c in insert_sql.GIVEN if c not in shared]
    rows = (
        {**shared, **{column: f"?{len(shared) + 1 + _COLUMNS * k + i}" for i, column in enumerate(own)}}
        for k in range(count)
    )
    return insert_sql.insert_values(rows, "id, custom_id")


async def _insert_sqlite(
    db: Database, rows: list[Row], origin: str, created_at: datetime, caller: Caller
) -> dict[str, int]:
    dialect = db.engine.dialect
    bind = DateTimeUTC(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    when = bind(created_at) if bind else created_at

    def stamp(value: datetime) -> Any:
        return bind(value) if bind else value

    ids: dict[str, int] = {}
    async with db.engine.begin() as connection:
        driver: Any = (await connection.get_raw_connection()).driver_connection
        for start in range(0, len(rows), _SQLITE_ROWS):
            part = rows[start : start + _SQLITE_ROWS]
            stored = (r[:_COLUMNS] if r.complete_by is None else (*r[:7], stamp(r.complete_by)) for r in part)
            params = [origin, when, caller.scope, caller.owner, *itertools.chain.from_iterable(stored)]
            # sqlite3 opens the transaction before the first INSERT; the block's end commits it.
            async with driver.execute(_sqlite_statement(len(part)), params) as cursor:
                ids.update((custom_id, new_id) for new_id, custom_id in await cursor.fetchall())
    return ids


async def kept(db: Database, rows: list[Row], scope: str) -> dict[str, Taken]:
    """What the stored requests of `scope` holding these rows' custom_ids hold, by custom_id."""
    found: dict[str, Taken] = {}
    custom_ids = [r.custom_id for r in rows]
    if not custom_ids:
        return found
    async with db.engine.connect() as connection:
        for start in range(0, len(custom_ids), _KEPT_PAGE):
            found.update(await find_taken(connection, scope, custom_ids[start : start + _KEPT_PAGE]))
    return found
