"""What the Anthropic face reads: its batches (with their request counts and the moment a cancel
began), pages of them newest first, and a batch's requests in pages for its results file.

Only batches created through the Anthropic face (origin `anthropic_batch`) are visible here; to
this face every other batch does not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.dropin.create import ANTHROPIC_ORIGIN
from app.core.rules.errors import not_found
from app.core.rules.states import B
from app.db.models import Batch, BatchEvent, Request
from app.db.session import Database

RESULT_PAGE_ROWS = 1000
CANCEL_STATUSES = (B.CANCELLING, B.CANCELLED)


@dataclass(frozen=True, slots=True)
class BatchView:
    """A batch with its requests counted by status and when its cancel began (None if never)."""

    batch: Batch
    requests: dict[str, int]
    cancel_initiated_at: datetime | None


async def batch(db: Database, batch_id: int) -> BatchView:
    """The Anthropic batch `batch_id`; NotFound when there is none (or it is of another origin)."""
    async with db.transaction() as session:
        row = await session.get(Batch, batch_id)
        if row is None or row.origin != ANTHROPIC_ORIGIN:
            raise not_found("message batch", batch_id)
        return (await _views(session, [row]))[0]


async def page(
    db: Database, limit: int, after_id: int | None = None, before_id: int | None = None
) -> tuple[list[BatchView], bool]:
    """Anthropic batches newest first (by id, so the order is stable): the `limit` just after
    `after_id`, or just before `before_id`; returns (views, whether more lie that way)."""
    stmt = select(Batch).where(Batch.origin == ANTHROPIC_ORIGIN)
    if before_id is not None:
        # Read towards newer batches from the anchor, then flip back to newest first.
        stmt = stmt.where(Batch.id > before_id).order_by(Batch.id.asc())
    else:
        if after_id is not None:
            stmt = stmt.where(Batch.id < after_id)
        stmt = stmt.order_by(Batch.id.desc())
    async with db.transaction() as session:
        rows = list((await session.scalars(stmt.limit(limit + 1))).all())
        has_more, rows = len(rows) > limit, rows[:limit]
        if before_id is not None:
            rows.reverse()
        return await _views(session, rows), has_more


async def _views(session: AsyncSession, rows: Sequence[Batch]) -> list[BatchView]:
    """The views of `rows`, with two grouped queries for all of them."""
    ids = [b.id for b in rows]
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    cancels: dict[int, datetime] = {}
    if ids:
        by_status = await session.execute(
            select(Request.batch_id, Request.status, func.count())
            .where(Request.batch_id.in_(ids))
            .group_by(Request.batch_id, Request.status)
        )
        for batch_id, status, n in by_status.all():
            counts[batch_id][status] = int(n)
        began = await session.execute(
            select(BatchEvent.batch_id, func.min(BatchEvent.at))
            .where(BatchEvent.batch_id.in_(ids), BatchEvent.to_status.in_(CANCEL_STATUSES))
            .group_by(BatchEvent.batch_id)
        )
        cancels = {batch_id: at for batch_id, at in began.all()}
    return [BatchView(b, counts[b.id], cancels.get(b.id)) for b in rows]


async def result_rows(db: Database, batch_id: int) -> AsyncIterator[list[Request]]:
    """The batch's requests in id order, RESULT_PAGE_ROWS at a time, each page read in its own
    short transaction so a slow download holds no lock or snapshot."""
    after = 0
    while True:
        async with db.transaction() as session:
            rows = list(
                (
                    await session.scalars(
                        select(Request)
                        .where(Request.batch_id == batch_id, Request.id > after)
                        .order_by(Request.id)
                        .limit(RESULT_PAGE_ROWS)
                    )
                ).all()
            )
        if not rows:
            return
        yield rows
        after = rows[-1].id
