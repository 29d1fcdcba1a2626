"""What the drop-in faces read: one drop-in batch with its timeline, and newest-first pages of
them (keyset on id, which grows with creation, so pages stay stable while batches are added)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.rules.errors import not_found
from app.db.models import Batch, BatchEvent
from app.db.session import Database


@dataclass(frozen=True, slots=True)
class Timeline:
    """A batch and its status changes, oldest first (the face derives its phase times from them)."""

    batch: Batch
    events: list[BatchEvent]


async def batch(db: Database, origin: str, batch_id: int) -> Timeline:
    """The drop-in batch `batch_id` created through the face of `origin`; NotFound otherwise
    (a native batch or another face's is not this face's to show)."""
    async with db.transaction() as session:
        found = await session.get(Batch, batch_id)
        if found is None or found.origin != origin:
            raise not_found("batch", batch_id)
        events = await _events(session, [batch_id])
    return Timeline(found, events[batch_id])


async def batches(
    db: Database, origin: str, *, before_id: int | None, limit: int
) -> tuple[list[Timeline], bool]:
    """Up to `limit` batches of `origin`, newest first, older than `before_id`; and has_more."""
    stmt = select(Batch).where(Batch.origin == origin).order_by(Batch.id.desc()).limit(limit + 1)
    if before_id is not None:
        stmt = stmt.where(Batch.id < before_id)
    async with db.transaction() as session:
        rows = list((await session.scalars(stmt)).all())
        page = rows[:limit]
        events = await _events(session, [b.id for b in page])
    return [Timeline(b, events[b.id]) for b in page], len(rows) > limit


async def _events(session: AsyncSession, batch_ids: list[int]) -> dict[int, list[BatchEvent]]:
    found: dict[int, list[BatchEvent]] = defaultdict(list)
    if not batch_ids:
        return found
    stmt = (
        select(BatchEvent)
        .where(BatchEvent.batch_id.in_(batch_ids))
        .order_by(BatchEvent.batch_id, BatchEvent.at, BatchEvent.id)
    )
    for event in (await session.scalars(stmt)).all():
        found[event.batch_id].append(event)
    return found
