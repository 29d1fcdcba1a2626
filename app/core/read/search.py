"""custom_id search conditions that the indexes can serve, on SQLite and PostgreSQL alike.

Both searches are case-sensitive and take the text literally (`%`, `_` and `\\` are plain
characters). "Starts with" is a range of the custom_id index, `p <= custom_id < next(p)`, compared
byte by byte (codepoint order): on PostgreSQL with the pattern operators that the index's
varchar_pattern_ops serves whatever the database's collation; on SQLite with the BINARY collation.
"Contains" is a LIKE that PostgreSQL answers from a pg_trgm index when migration 0009 could create
one, and that scans otherwise; SQLite has no such index and scans (its `instr` is case-sensitive,
where its LIKE would not be).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, SQLColumnExpression, and_, func

MAX_CHAR = 0x10FFFF
SURROGATES = range(0xD800, 0xE000)


def starts_with(column: Any, prefix: str, *, postgres: bool) -> ColumnElement[bool]:
    """`column` starts with `prefix` (non-empty), as an index range."""
    at_least, below = ("~>=~", "~<~") if postgres else (">=", "<")
    lower = column.op(at_least, is_comparison=True)(prefix)
    upper = after_prefix(prefix)
    return lower if upper is None else and_(lower, column.op(below, is_comparison=True)(upper))


def after_prefix(prefix: str) -> str | None:
    """The least string greater than every string that starts with `prefix`, in codepoint order;
    None when there is none (the prefix is all U+10FFFF)."""
    stem = prefix.rstrip(chr(MAX_CHAR))
    if not stem:
        return None
    following = ord(stem[-1]) + 1
    if following in SURROGATES:  # not characters: UTF-8 cannot store them
        following = SURROGATES.stop
    return stem[:-1] + chr(following)


def contains(column: SQLColumnExpression[str], text: str, *, postgres: bool) -> ColumnElement[bool]:
    """`column` contains `text` (non-empty), case-sensitive."""
    if postgres:
        return column.like(f"%{escape_like(text)}%", escape="\\")
    return func.instr(column, text) > 0


def escape_like(text: str) -> str:
    """`text` as a LIKE pattern that matches it literally (escape character `\\`)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
