"""Steering SQLite's query planner, which has no statistics (no ANALYZE is ever run).

Without them SQLite takes an equality on any indexed column as the best way in, even where that
index holds every row the query may touch (a batch's 50,000 requests, every processing one) and
another term (an IN list of 1,000 custom_ids) would probe a few: `unindexed` takes a term out
of its choice. PostgreSQL plans from statistics and sees the column as it is.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class unindexed(FunctionElement[Any]):
    """The column as it is, on SQLite behind a unary + that keeps the planner from using an index
    on it (SQLite's documented way to disqualify a term)."""

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
