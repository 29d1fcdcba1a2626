"""One statement for many rows, executed by the driver itself inside the session's transaction.

SQLAlchemy's executemany builds a dict of parameters per row and runs each value through its
type's bind processor in Python (`construct_params`): for 1,000 results of an OpenAI batch that
cost about as much as SQLite's own work on them (bench.openai_backend's profile). Here the
statement is compiled once per dialect, its parameters' bind processors are looked up once, and
each row becomes a plain tuple the driver (aiosqlite, asyncpg) takes as it is. The values are
bound exactly as SQLAlchemy binds them: the same processors, the same compiled SQL; a JSON
column's value may also be jsontext.Encoded, JSON text already encoded, which goes as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeEngine

from app.ground.jsontext import Encoded


@dataclass(frozen=True)
class Compiled:
    """A statement as one dialect's driver runs it: its SQL, and per positional parameter its
    name and bind processor (None: the value goes as it is)."""

    sql: str
    names: tuple[str, ...]  # without PREFIX
    processors: tuple[Callable[[Any], Any] | None, ...]
    fixed: Mapping[str, Any]  # parameters whose value the statement carries (a literal bound)

    def rows(self, rows: Sequence[Mapping[str, Any]], shared: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Each of `rows` (values by parameter name, PREFIX left out; `shared` the same for
        every row) as the driver's positional row."""
        given = {**self.fixed, **shared}
        columns = [
            _bound([given[name]] * len(rows) if name in given else [row[name] for row in rows], process)
            for name, process in zip(self.names, self.processors, strict=True)
        ]
        return list(zip(*columns, strict=True))


def _bound(values: list[Any], process: Callable[[Any], Any] | None) -> list[Any]:
    """One parameter's values, bound: a column at a time (map, not a generator per row), and one
    object every row holds (a chunk's completed_at, an error of None) bound once."""
    if process is None or not values:
        return values
    first = values[0]
    if all(value is first for value in values):  # stops at the first other: cheap when they vary
        return [process(first)] * len(values)
    return list(map(process, values))


# What a bound parameter's name starts with: SQLAlchemy reserves a column's own name for the
# column's value in an UPDATE's SET (`values(status=bindparam("b_status"))`).
PREFIX = "b_"


def compile_for(stmt: UpdateBase, dialect: Dialect) -> Compiled:
    """`stmt` compiled for `dialect`, whose paramstyle must be positional (qmark for sqlite3,
    numeric_dollar for asyncpg: both the app's drivers). Its parameters are named PREFIX and
    the value's key in a row."""
    compiled = stmt.compile(dialect=dialect)
    if not compiled.positional or compiled.positiontup is None:
        raise ValueError(f"{dialect.name}: the driver's paramstyle is not positional")
    names = tuple(compiled.positiontup)
    processors = tuple(_processor(compiled.binds[name].type.dialect_impl(dialect), dialect) for name in names)
    fixed = {
        name.removeprefix(PREFIX): bind.value for name, bind in compiled.binds.items() if not bind.required
    }
    return Compiled(compiled.string, tuple(n.removeprefix(PREFIX) for n in names), processors, fixed)


def _processor(impl: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """The type's bind processor; a JSON type's also takes Encoded text, bound as it is (the
    text the serializer would have made of its value, up to spacing)."""
    process = impl.bind_processor(dialect)
    if process is None or not isinstance(impl, JSON):
        return process

    def json_or_encoded(value: Any) -> Any:
        return value.text if value.__class__ is Encoded else process(value)

    return json_or_encoded


async def executemany(
    session: AsyncSession,
    compiled: Callable[[Dialect], Compiled],
    rows: Sequence[Mapping[str, Any]],
    **shared: Any,
) -> None:
    """Execute the statement `compiled(dialect)` gives (`cached`) once per row of `rows` (and
    the values `shared` by every row), on the session's connection, inside its transaction."""
    if not rows:
        return
    connection = await session.connection()
    statement = compiled(connection.dialect)
    records = statement.rows(rows, shared)
    driver = await _in_transaction(connection)
    if connection.dialect.name == "postgresql":
        await driver.executemany(statement.sql, records)
    else:
        await (await driver.executemany(statement.sql, records)).close()


async def _in_transaction(connection: AsyncConnection) -> Any:
    """The driver's connection, its transaction begun: asyncpg's adapter begins it only at the
    first statement SQLAlchemy runs, and without it each statement would commit on its own.
    (sqlite3 begins one itself before a write.)"""
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if connection.dialect.name == "postgresql" and not driver.is_in_transaction():
        await connection.execute(text("SELECT 1"))
    return driver


def cached(build: Callable[..., UpdateBase]) -> Callable[..., Callable[[Dialect], Compiled]]:
    """Cache a statement builder's compiled form per arguments and dialect."""

    @functools.cache
    def compiled(*args: Any) -> Callable[[Dialect], Compiled]:
        stmt = build(*args)
        return functools.cache(lambda dialect: compile_for(stmt, dialect))

    return compiled
