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

COUNT_CAP = 10_000
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
) -> Page[Any]:
    """One page of `stmt` in `order`, after (or before) a cursor, with its total up to COUNT_CAP."""
    counted = await session.scalar(
        select(func.count()).select_from(select(order[0][0]).where(*where).limit(COUNT_CAP + 1).subquery())
    )
    total = int(counted or 0)
    backwards = bool(before) and not after
    cursor = _decode(before if backwards else after)
    # Paging backwards reads the same order reversed from the cursor, then flips the rows back.
    direction = [(column, descending != backwards) for column, descending in order]
    page_where = list(where)
    if cursor is not None and len(cursor) == len(order):
        page_where.append(_beyond(direction, cursor))
    rows = list(
        (
            await session.scalars(
                stmt.where(*page_where)
                .order_by(*(c.desc() if d else c.asc() for c, d in direction))
                .limit(size + 1)
            )
        ).all()
    )
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


def _decode(cursor: str) -> list[Any] | None:
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        return None  # a mangled cursor shows the first page rather than an error
    return values if isinstance(values, list) else None
