"""Steering SQLite's query planner, which has no statistics (no ANALYZE is ever run).

Without them SQLite takes an equality on any indexed column as the best way in, even where that
index holds every row the query may touch (a batch's 50,000 requests, every processing one) and
another term (an IN list of 1,000 ids) would probe a few: `unindexed` takes a term out of its
choice. PostgreSQL plans from statistics, but has none for rows just loaded (autovacuum's
ANALYZE comes later): for a batch of 50,000 requests collected within a minute of its intake it
too estimated a handful of rows on batch_id and status and read all 50,000 for each chunk of
1,000 results (a BitmapAnd of both indexes, 36 ms a chunk). There the term is an expression no
index holds: `+column` for a number, `column || ''` for text.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import types
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class unindexed(FunctionElement[Any]):
    """The column's value, in an expression that keeps the planner from using an index on it
    (on SQLite a unary +, its documented way to disqualify a term)."""

    inherit_cache = True

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(unindexed)
def _plain(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(unindexed, "sqlite")
def _unary_plus(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)


@compiles(unindexed, "postgresql")
def _expression(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    if isinstance(element.type, types.String):
        return f"({column} || '')"
    if isinstance(element.type, types.Integer):
        return f"(+{column})"
    raise TypeError(f"unindexed: no index-free expression for {element.type!r} on PostgreSQL")


def _from_hint(compiler: SQLiteCompiler, table: Any, text: str) -> str:
    return text


# SQLAlchemy's SQLite compiler drops table hints; SQLite has one, `INDEXED BY`, for where a
# statement must use a partial index the planner would pass over (see `indexed_by`).
SQLiteCompiler.get_from_hint_text = _from_hint  # type: ignore[method-assign,assignment]


def indexed_by(index: str) -> str:
    """The hint for `Select.with_hint(table, indexed_by(name), "sqlite")`: SQLite reads the table
    through that index. Without statistics it takes any equality on an indexed column over a
    partial index whose WHERE the statement repeats, even where the partial index holds a few
    rows and the other every unfinished request; PostgreSQL chooses from its statistics."""
    return f"INDEXED BY {index}"
