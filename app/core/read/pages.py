"""Keyset pagination, the one scheme every list uses (UI pages and the API alike).

Pages are read with a cursor (the sort columns of the row to continue from), never OFFSET, and
totals are counted up to COUNT_CAP rows only, so a list of millions costs the same as a short one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.rules import storable

COUNT_CAP = 10_000
# Rows a scattered page looks at in its order before it reads the filter's index (see _scattered_rows).
PROBE_ROWS = 20_000
PAGE_SIZES = (10, 25, 50, 100)
T = TypeVar("T")


@dataclass(slots=True)
class Page(Generic[T]):
    """One page of a list; cursors are opaque strings for `after` / `before`."""

    rows: list[T]
    total: int
    total_capped: bool
    next_cursor: str | None
    prev_cursor: str | None


async def keyset_page(
    session: AsyncSession,
    stmt: Select[Any],
    where: Sequence[ColumnElement[bool]],
    order: list[tuple[Any, bool]],
    size: int,
    after: str = "",
    before: str = "",
    *,
    scattered: bool = False,
    counted: Select[Any] | None = None,
) -> Page[Any]:
    """One page of `stmt` in `order`, after (or before) a cursor, with its total up to COUNT_CAP.

    `scattered`: `where` is served by an index of its own (a search, a filter on another table), so
    its matches may lie anywhere in the sort order; see `_scattered_rows`. `counted`: a cheaper
    statement selecting one row per match, for the total.
    """
    if counted is None:
        counted = select(order[0][0]).where(*where)
    total = int(
        await session.scalar(select(func.count()).select_from(counted.limit(COUNT_CAP + 1).subquery())) or 0
    )
    backwards = bool(before) and not after
    cursor = _decode(before if backwards else after, order)
    # Paging backwards reads the same order reversed from the cursor, then flips the rows back.
    direction = [(column, descending != backwards) for column, descending in order]
    past = [_beyond(direction, cursor)] if cursor is not None else []
    if scattered and len(direction) == 1:
        rows = await _scattered_rows(session, stmt, where, past, direction[0], size, total)
    else:
        rows = await _rows(session, stmt.where(*where, *past), direction, size + 1)
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
    has_next = (more and not backwards) or (backwards and bool(rows))
    has_prev = (more and backwards) or (not backwards and cursor is not None and bool(rows))
    return Page(
        rows,
        min(total, COUNT_CAP),
        total > COUNT_CAP,
        _encode(rows[-1], order) if rows and has_next else None,
        _encode(rows[0], order) if rows and has_prev else None,
    )


async def _rows(
    session: AsyncSession, stmt: Select[Any], direction: list[tuple[Any, bool]], limit: int
) -> list[Any]:
    ordered = stmt.order_by(*(c.desc() if d else c.asc() for c, d in direction)).limit(limit)
    return list((await session.scalars(ordered)).all())


async def _scattered_rows(
    session: AsyncSession,
    stmt: Select[Any],
    where: Sequence[ColumnElement[bool]],
    past: list[ColumnElement[bool]],
    direction: tuple[Any, bool],
    size: int,
    total: int,
) -> list[Any]:
    """The next size + 1 matches in the order of one unique column (the id), when `where` has its
    own index and the matches may sit far back in that order.

    Walking the id order and filtering would read every row newer than the first match (500,000
    rows for a prefix whose newest match is half the table back). Instead: with many matches,
    look among the PROBE_ROWS rows next in order first (many matches are usually among them);
    otherwise, or when that found too few, read the matching ids from the filter's own index and
    sort them (as many as there are matches, and at most COUNT_CAP when the total is not capped).
    """
    column, descending = direction
    if total > COUNT_CAP:
        edge = await session.scalar(
            select(column)
            .where(*past)
            .order_by(column.desc() if descending else column.asc())
            .offset(PROBE_ROWS)
            .limit(1)
        )
        if edge is not None:
            window = column >= edge if descending else column <= edge
            rows = await _rows(session, stmt.where(*where, *past, window), [direction], size + 1)
            if len(rows) > size:
                return rows
    # `column + 0`: an order no index provides, so the planner cannot walk the id index instead.
    ids = (
        select(column)
        .where(*where, *past)
        .order_by((column + 0).desc() if descending else (column + 0).asc())
    )
    return await _rows(
        session, stmt.where(column.in_(ids.limit(size + 1).correlate(None))), [direction], size + 1
    )


def _beyond(direction: list[tuple[Any, bool]], cursor: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after the cursor in this order: (a, b) > (x, y) spelled out per column."""
    clauses = []
    for i, (column, descending) in enumerate(direction):
        equal = [c == v for (c, _), v in zip(direction[:i], cursor[:i], strict=True)]
        step = column < cursor[i] if descending else column > cursor[i]
        clauses.append(and_(*equal, step))
    return or_(*clauses)


def _encode(row: Any, order: list[tuple[Any, bool]]) -> str:
    return cursor_of([getattr(row, column.key) for column, _ in order])


def cursor_of(values: list[Any]) -> str:
    """The cursor of a row whose sort columns hold `values`."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode(cursor: str, order: list[tuple[Any, bool]]) -> list[Any] | None:
    """The sort values a cursor holds; None (the first page, rather than an error) for a cursor
    that is mangled or was not made for `order`: a value of another type than its column's, an
    integer past int64 or text no database compares (each failed the query as a 500)."""
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        return None
    if not isinstance(values, list) or len(values) != len(order):
        return None
    fits = all(
        _fits(value, column.type.python_type) for value, (column, _) in zip(values, order, strict=True)
    )
    return values if fits else None


def _fits(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    return kind is str and isinstance(value, str) and storable.text(value) == value
