"""The text of intake's INSERTs, built in one place for every way intake writes rows.

Intake writes through hand-made statements on its hot paths (a cached text() per request, a
PostgreSQL unnest() or COPY for groups and bulk bodies, SQLite multi-row VALUES), because each was
measured faster than SQLAlchemy's own insert() there (see group_commit.py and bulk_store.py). They
all store the same columns with the same starting values; this module spells them once, so a new
column is one edit here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from app.ground import jsontext
from app.ground.statuses import RequestStatus

# What every new native request starts as: pending, never tried.
STARTS_AS: dict[str, str | int] = {
    "status": RequestStatus.PENDING.value,
    "inference_attempts": 0,
    "resubmits": 0,
}
# The columns each row brings, in the order the statements below take them. `scope` is where
# its custom_id is unique: its owner's (app.core.rules.owners.Caller.scope).
GIVEN = (
    "scope",
    "owner",
    "custom_id",
    "origin",
    "backend",
    "endpoint",
    "model",
    "body",
    "body_bytes",
    "delivery",
    "complete_by",
    "created_at",
)
COLUMNS = (*GIVEN[:-1], *STARTS_AS, "created_at")

_INTO = f"INSERT INTO requests ({', '.join(COLUMNS)})"


def _literal(value: str | int) -> str:
    # Only STARTS_AS's own constants come here, never a caller's value.
    return f"'{value}'" if isinstance(value, str) else str(int(value))


def _selected(given: Mapping[str, str]) -> str:
    """Each column's expression: the caller's SQL for the given ones, the starting literal else."""
    return ", ".join(given[c] if c in given else _literal(STARTS_AS[c]) for c in COLUMNS)


def _skip_taken(returning: str) -> str:
    # A custom_id already stored in the scope is skipped, not an error: the caller looks it up.
    return f" ON CONFLICT (scope, custom_id) DO NOTHING RETURNING {returning}"


def insert_values(rows: Iterable[Mapping[str, str]], returning: str) -> str:
    """INSERT ... VALUES, one tuple per mapping of GIVEN column to its SQL (a bind marker)."""
    values = ", ".join(f"({_selected(row)})" for row in rows)
    return f"{_INTO} VALUES {values}{_skip_taken(returning)}"


def insert_select(given: Mapping[str, str], source: str, returning: str) -> str:
    """INSERT ... SELECT from `source` (a table or a set-returning call, with any ORDER BY),
    `given` mapping each GIVEN column to its expression there."""
    return f"{_INTO} SELECT {_selected(given)} FROM {source}{_skip_taken(returning)}"


def named_markers() -> dict[str, str]:
    """`:column` for every GIVEN column: one row bound by name."""
    return {column: f":{column}" for column in GIVEN}


# What a scope's requests hold under some custom_ids (the caller adds the custom_id condition).
STORED_BY_CUSTOM_ID = "SELECT custom_id, endpoint, body, delivery FROM requests WHERE scope = :scope"


# msgspec only: a row it refuses (a lone surrogate, which intake refuses before) fails its group.
_encode = msgspec.json.Encoder().encode
# SQLite takes the group as a JSON array of rows, each an array of GIVEN's values as SQLAlchemy
# would store them: JSON columns as their text (the engine's json_serializer, jsontext.dumps),
# datetimes in SQLite's DATETIME text (in UTC, as DateTimeUTC stores them). `WHERE true` tells
# SQLite's parser that ON CONFLICT is the upsert clause, not a join's ON.
INSERT_MANY_SQLITE = insert_select(
    {column: f"json_extract(value, '$[{index}]')" for index, column in enumerate(GIVEN)},
    "json_each(?) WHERE true",
    "scope, custom_id, id",
)
# Where in GIVEN the values to convert are: a test of every column of every row made the group
# text 4% of intake's CPU time.
_JSON_AT = tuple(GIVEN.index(column) for column in ("body", "delivery"))
_TIME_AT = tuple(GIVEN.index(column) for column in ("complete_by", "created_at"))


def sqlite_group_json(rows: list[dict[str, Any]]) -> str:
    """The rows as INSERT_MANY_SQLITE takes them (msgspec.EncodeError for a value it refuses)."""
    return _encode([_sqlite_row(row) for row in rows]).decode()


def _sqlite_row(row: dict[str, Any]) -> list[Any]:
    values = [row[column] for column in GIVEN]
    for at in _JSON_AT:
        if values[at] is not None:
            values[at] = jsontext.dumps(values[at])
    for at in _TIME_AT:
        if values[at] is not None:
            values[at] = sqlite_datetime(values[at])
    return values


def sqlite_datetime(value: datetime) -> str:
    """An aware datetime as SQLAlchemy's SQLite DATETIME stores it after DateTimeUTC: in UTC,
    `YYYY-MM-DD HH:MM:SS.ffffff`."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
