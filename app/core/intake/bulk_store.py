"""Storing bulk intake's rows: one statement a chunk, through the driver, with the database's
fastest way to insert many rows that still skips taken custom_ids and returns the new ids.

PostgreSQL: `INSERT ... SELECT FROM unnest(<one array a column>) ON CONFLICT DO NOTHING
RETURNING`: the rows travel as a handful of binary arrays in one round trip and the JSON is
parsed by the server, as COPY would. SQLite: multi-row `INSERT ... VALUES (...), (...) ON
CONFLICT DO NOTHING RETURNING`, as many rows a statement as its variable limit allows, in one
transaction. Both commit before returning, so what they return is durable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import String, bindparam, text

from app.db.session import Database

# The columns every intake sets (see accept._INSERT); the others take their defaults.
_PG_INSERT = """
INSERT INTO requests (scope, custom_id, origin, backend, endpoint, model, body, body_bytes, delivery,
                      status, inference_attempts, resubmits, created_at)
SELECT '', c, $1, b, e, m, j::jsonb, n, d::jsonb, 'pending', 0, 0, $2
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[])
     AS t(c, b, e, m, j, n, d)
ON CONFLICT (scope, custom_id) DO NOTHING
RETURNING id, custom_id
"""

_SQLITE_COLUMNS = (
    "INSERT INTO requests (scope, custom_id, origin, backend, endpoint, model, body, body_bytes,"
    " delivery, status, inference_attempts, resubmits, created_at) VALUES "
)
_SQLITE_ROW = "('', ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0, ?)"
_SQLITE_CONFLICT = " ON CONFLICT (scope, custom_id) DO NOTHING RETURNING id, custom_id"
# SQLite allows 32,766 variables a statement (since 3.32); 9 a row.
_SQLITE_ROWS = 3000

# What a duplicate is compared on, to tell a resend from a different request.
_KEPT = (
    text("SELECT custom_id, endpoint, body, delivery FROM requests WHERE scope = '' AND custom_id IN :ids")
    .bindparams(bindparam("ids", expanding=True))
    .columns(custom_id=String(), endpoint=String(), body=JsonB, delivery=JsonB)
)
_KEPT_PAGE = 500


@dataclass(frozen=True, slots=True)
class Row:
    """One request to store: its columns, the JSON already encoded, and its body as decoded
    (to compare with a row that holds the same custom_id)."""

    custom_id: str
    backend: str
    endpoint: str
    model: str
    body_json: str
    body_bytes: int
    delivery: str  # JSON
    body: dict[str, Any]


async def insert(db: Database, rows: list[Row], origin: str, created_at: datetime) -> dict[str, int]:
    """Insert `rows` as pending in one transaction, skipping custom_ids already taken; returns
    the new ids by custom_id (committed when this returns)."""
    if not rows:
        return {}
    if db.is_postgres:
        return await _insert_postgres(db, rows, origin, created_at)
    return await _insert_sqlite(db, rows, origin, created_at)


async def _insert_postgres(
    db: Database, rows: list[Row], origin: str, created_at: datetime
) -> dict[str, int]:
    columns = [
        [r.custom_id for r in rows],
        [r.backend for r in rows],
        [r.endpoint for r in rows],
        [r.model for r in rows],
        [r.body_json for r in rows],
        [r.body_bytes for r in rows],
        [r.delivery for r in rows],
    ]
    async with db.engine.connect() as connection:
        driver: Any = (await connection.get_raw_connection()).driver_connection
        # One statement, outside any transaction SQLAlchemy would open: it commits on its own.
        records = await driver.fetch(_PG_INSERT, origin, created_at, *columns)
    return {custom_id: new_id for new_id, custom_id in records}


async def _insert_sqlite(db: Database, rows: list[Row], origin: str, created_at: datetime) -> dict[str, int]:
    dialect = db.engine.dialect
    when = DateTimeUTC(timezone=True).dialect_impl(dialect).bind_processor(dialect)(created_at)
    ids: dict[str, int] = {}
    async with db.engine.begin() as connection:
        driver: Any = (await connection.get_raw_connection()).driver_connection
        for start in range(0, len(rows), _SQLITE_ROWS):
            part = rows[start : start + _SQLITE_ROWS]
            params: list[Any] = []
            for r in part:
                params += (r.custom_id, origin, r.backend, r.endpoint, r.model, r.body_json, r.body_bytes)
                params += (r.delivery, when)
            statement = _SQLITE_COLUMNS + ",".join([_SQLITE_ROW] * len(part)) + _SQLITE_CONFLICT
            # sqlite3 opens the transaction before the first INSERT; the block's end commits it.
            async with driver.execute(statement, params) as cursor:
                ids.update((custom_id, new_id) for new_id, custom_id in await cursor.fetchall())
    return ids


async def kept(db: Database, rows: list[Row]) -> dict[str, tuple[str, Any, Any]]:
    """(endpoint, body, delivery) of the stored requests holding these rows' custom_ids."""
    found: dict[str, tuple[str, Any, Any]] = {}
    custom_ids = [r.custom_id for r in rows]
    if not custom_ids:
        return found
    async with db.engine.connect() as connection:
        for start in range(0, len(custom_ids), _KEPT_PAGE):
            page = {"ids": custom_ids[start : start + _KEPT_PAGE]}
            for custom_id, endpoint, body, delivery in await connection.execute(_KEPT, page):
                found[custom_id] = (endpoint, body, delivery)
    return found
