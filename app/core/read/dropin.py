"""What the drop-in faces read: one drop-in batch with its timeline and its requests counted by
status, newest-first pages of them (keyset on id, which grows with creation, so pages stay
stable while batches are added), and a batch's requests in pages for its results.

A face sees only the batches created through it (its `origin`); to it every other batch does
not exist.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.rules.errors import not_found
from app.core.rules.owners import Caller, visible
from app.core.rules.states import B
from app.db.models import Batch, BatchEvent, Request
from app.db.session import Database

RESULT_PAGE_ROWS = 1000
CANCEL_STATUSES = (B.CANCELLING, B.CANCELLED)


@dataclass(frozen=True, slots=True)
class DropinBatch:
    """A batch, its status changes oldest first (the faces derive their phase times from them),
    and its requests counted by status."""

    batch: Batch
    events: list[BatchEvent]
    requests: dict[str, int]

    @property
    def cancel_initiated_at(self) -> datetime | None:
        """When its cancel began (the first move to cancelling or cancelled), or None."""
        return next((e.at for e in self.events if e.to_status in CANCEL_STATUSES), None)


async def batch(db: Database, origin: str, batch_id: int, caller: Caller, what: str = "batch") -> DropinBatch:
    """The drop-in batch `batch_id` created through the face of `origin`, if `caller` may see
    it; NotFound otherwise."""
    async with db.transaction() as session:
        row = await session.get(Batch, batch_id)
        if row is None or row.origin != origin or not caller.sees(row.owner):
            raise not_found(what, batch_id)
        return (await _views(session, [row]))[0]


async def page(
    db: Database,
    origin: str,
    caller: Caller,
    limit: int,
    after_id: int | None = None,
    before_id: int | None = None,
) -> tuple[list[DropinBatch], bool]:
    """`caller`'s batches of `origin` newest first: the `limit` just older than `after_id`, or
    just newer than `before_id`; returns (batches, whether more lie that way)."""
    stmt = select(Batch).where(Batch.origin == origin, visible(Batch.owner, caller))
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


async def result_rows(db: Database, batch_id: int) -> AsyncIterator[list[Request]]:
    """The batch's requests in id order, RESULT_PAGE_ROWS at a time, each page read in its own
    short transaction so a slow download holds no lock or snapshot."""
    after = 0
    while True:
        async with db.transaction() as session:
            stmt = select(Request).where(Request.batch_id == batch_id, Request.id > after)
            rows = list((await session.scalars(stmt.order_by(Request.id).limit(RESULT_PAGE_ROWS))).all())
        if not rows:
            return
        yield rows
        after = rows[-1].id


async def _views(session: AsyncSession, rows: Sequence[Batch]) -> list[DropinBatch]:
    """The views of `rows`, with two grouped queries for all of them."""
    ids = [b.id for b in rows]
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    events: dict[int, list[BatchEvent]] = defaultdict(list)
    if ids:
        by_status = await session.execute(
            select(Request.batch_id, Request.status, func.count())
            .where(Request.batch_id.in_(ids))
            .group_by(Request.batch_id, Request.status)
        )
        for batch_id, status, n in by_status.all():
            counts[batch_id][status] = int(n)
        timeline = select(BatchEvent).where(BatchEvent.batch_id.in_(ids))
        for event in (await session.scalars(timeline.order_by(BatchEvent.at, BatchEvent.id))).all():
            events[event.batch_id].append(event)
    return [DropinBatch(b, events[b.id], counts[b.id]) for b in rows]
