"""app.db.driver: rows bound as SQLAlchemy binds them, for each of the app's drivers; a JSON
column also takes jsontext.Encoded text, bound as it is."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, update
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.dialects.sqlite import aiosqlite
from sqlalchemy.engine import Dialect

from app.db import driver
from app.db.models import Request
from app.ground import jsontext

DIALECTS = [
    aiosqlite.dialect(json_serializer=jsontext.dumps),
    asyncpg.dialect(json_serializer=jsontext.dumps),
]
_requests = Request.__table__
STATEMENT = (
    update(_requests)
    .where(_requests.c.id == bindparam("b_id"), _requests.c.status == bindparam("b_where_status"))
    .values(response=bindparam("b_response"), completed_at=bindparam("b_completed_at"))
)


def reference(dialect: Dialect, name: str, value: object) -> object:
    """What SQLAlchemy's own bind processor makes of `value` for the parameter `name`."""
    bind = STATEMENT.compile(dialect=dialect).binds[driver.PREFIX + name]
    process = bind.type.dialect_impl(dialect).bind_processor(dialect)
    return value if process is None else process(value)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_rows_are_bound_as_sqlalchemy_binds_them_and_encoded_json_as_it_is(dialect: Dialect) -> None:
    compiled = driver.compile_for(STATEMENT, dialect)
    now = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)
    encoded = jsontext.Encoded('{"status_code": 200, "body": {"a": [1, 2]}}')
    rows = [
        {"id": 1, "response": {"b": 1}, "completed_at": now},
        {"id": 2, "response": encoded, "completed_at": now},
        {"id": 3, "response": None, "completed_at": now},
    ]
    bound = compiled.rows(rows, {"where_status": "processing"})
    position = {name: i for i, name in enumerate(compiled.names)}
    assert [row[position["id"]] for row in bound] == [1, 2, 3]
    assert [row[position["response"]] for row in bound] == [
        reference(dialect, "response", {"b": 1}),
        encoded.text,  # as it came, spacing and all: not encoded again
        reference(dialect, "response", None),
    ]
    assert {row[position["completed_at"]] for row in bound} == {reference(dialect, "completed_at", now)}
    assert {row[position["where_status"]] for row in bound} == {"processing"}
