"""The batcher: keeps one `building` batch per group and closes it into a ready batch when due.

Intake only inserts pending requests; this module is the only writer of `requests.batch_id`, so
intake never waits on a batch lock and a request can never land in a batch already submitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.rules import routing, states
from app.db.models import Batch, Request
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.config import Settings
from app.ground.statuses import BatchStatus, RequestStatus

Group = tuple[str, str, str, str]  # backend, endpoint, model, owner: batches never mix teams


@dataclass(frozen=True, slots=True)
class GroupStats:
    count: int
    bytes: int
    oldest: datetime
    due: datetime | None = None  # the soonest complete_by of its pending requests


async def form_due_batches(db: Database, settings: Settings) -> list[int]:
    """Refresh building batches from pending requests and close the due ones; returns closed ids."""
    now = utcnow()
    async with db.transaction() as session:
        stats = await _pending_stats(session)
        building = {
            (b.backend, b.endpoint, b.model, b.owner): b
            for b in (await session.scalars(select(Batch).where(Batch.status == BatchStatus.BUILDING))).all()
        }
        for group in stats.keys() - building.keys():
            if opened := await _open_building(session, db, group, stats[group]):
                building[group] = opened
        for group, batch in building.items():
            group_stats = stats.get(group, GroupStats(0, 0, now))
            if (batch.request_count, batch.bytes) != (group_stats.count, group_stats.bytes):
                # Conditional: another replica may have closed this batch since we read it.
                await session.execute(
                    update(Batch)
                    .where(Batch.id == batch.id, Batch.status == BatchStatus.BUILDING)
                    .values(request_count=group_stats.count, bytes=group_stats.bytes)
                    .execution_options(synchronize_session=False)
                )

    closed = []
    for group, batch in building.items():
        pending = stats.get(group)
        if pending is None:
            await end_empty_building(db, batch.id)
            continue
        reason = _close_reason(batch, pending, settings, now)
        if reason and await close_building(db, settings, batch.id, reason):
            closed.append(batch.id)
    return closed


async def close_building(db: Database, settings: Settings, batch_id: int, reason: str) -> bool:
    """Assign the oldest pending requests of the batch's group to it and mark it ready.

    Takes at most the backend's batch_max_requests (BATCH_MAX_REQUESTS unless its spec sets
    one), cut where the running byte sum would pass its batch_max_bytes;
    the rest stay pending for the next building batch. Returns False when there was nothing to do
    (another replica holds the batch, it is no longer building, or no request was free).
    """
    async with db.transaction() as session:
        batch = await _locked_building(session, batch_id)
        if batch is None:
            return False
        candidates = (
            await session.execute(
                select(Request.id, Request.body_bytes)
                .where(
                    Request.status == RequestStatus.PENDING,
                    Request.backend == batch.backend,
                    Request.endpoint == batch.endpoint,
                    Request.model == batch.model,
                    Request.owner == batch.owner,
                )
                .order_by(Request.id)
                .limit(routing.batch_max_requests(settings, batch.backend))
                .with_for_update(skip_locked=True)
            )
        ).all()
        ids: list[int] = []
        total = 0
        max_bytes = routing.batch_max_bytes(settings, batch.backend)
        for request_id, size in candidates:
            if ids and total + size > max_bytes:
                break
            ids.append(request_id)
            total += size
        if not ids:
            return False
        moved = await states.move_requests(
            session, ids, RequestStatus.PENDING, RequestStatus.BATCHED, batch_id=batch.id
        )
        batch.request_count = moved
        batch.bytes = total
        batch.close_requested = False
        states.move_batch(session, batch, BatchStatus.READY, reason)
    return True


# Why a building batch ended without ever closing (shown on its timeline): its requests were
# cancelled, or, with several replicas, another replica's batch took them as this one opened.
EMPTY_REASON = "no pending request left in its group (cancelled, or taken by another batch)"


async def end_empty_building(db: Database, batch_id: int) -> bool:
    """End a building batch whose group has no pending request left (they were cancelled, or
    another replica's batch took them), as nothing else would ever close it. A request that
    arrives later opens a new building batch (the unique index is on building batches only)."""
    async with db.transaction() as session:
        batch = await _locked_building(session, batch_id)
        if batch is None:
            return False
        pending = await session.scalar(
            select(Request.id)
            .where(
                Request.status == RequestStatus.PENDING,
                Request.backend == batch.backend,
                Request.endpoint == batch.endpoint,
                Request.model == batch.model,
                Request.owner == batch.owner,
            )
            .limit(1)
        )
        # Checked again under the batch's lock: a request accepted since the stats were read
        # keeps it building.
        if pending is not None:
            return False
        batch.request_count = batch.bytes = 0
        states.move_batch(session, batch, BatchStatus.CANCELLED, EMPTY_REASON)
    return True


async def _pending_stats(session: AsyncSession) -> dict[Group, GroupStats]:
    rows = await session.execute(
        select(
            Request.backend,
            Request.endpoint,
            Request.model,
            Request.owner,
            func.count(),
            func.coalesce(func.sum(Request.body_bytes), 0),
            func.min(Request.created_at),
            func.min(Request.complete_by),
        )
        .where(Request.status == RequestStatus.PENDING)
        .group_by(Request.backend, Request.endpoint, Request.model, Request.owner)
    )
    return {(b, e, m, o): GroupStats(int(c), int(s), oldest, due) for b, e, m, o, c, s, oldest, due in rows}


async def _open_building(
    session: AsyncSession, db: Database, group: Group, stats: GroupStats
) -> Batch | None:
    backend, endpoint, model, owner = group
    now = utcnow()
    insert = pg_insert if db.is_postgres else sqlite_insert
    # Another replica may open the same group's batch at the same moment: the partial unique
    # index makes exactly one insert win, the other does nothing.
    new_id = await session.scalar(
        insert(Batch)
        .values(
            backend=backend,
            endpoint=endpoint,
            model=model,
            owner=owner,
            origin="api",
            status=BatchStatus.BUILDING,
            request_count=stats.count,
            bytes=stats.bytes,
            completed_count=0,
            failed_count=0,
            close_requested=False,
            run_failures=0,
            created_at=now,
            status_changed_at=now,
        )
        .on_conflict_do_nothing()
        .returning(Batch.id)
    )
    if new_id is None:
        return None
    batch = await session.get(Batch, new_id)
    assert batch is not None
    states.begin_batch(session, batch, "first pending request of this group")
    return batch


def _close_reason(batch: Batch, stats: GroupStats, settings: Settings, now: datetime) -> str | None:
    if batch.close_requested:
        return "closed by operator"
    if stats.count >= (max_requests := routing.batch_max_requests(settings, batch.backend)):
        return f"reached {max_requests} requests"
    if stats.bytes >= (max_bytes := routing.batch_max_bytes(settings, batch.backend)):
        return f"reached {max_bytes} bytes"
    max_age = routing.max_age_seconds(settings, batch.backend)
    if now - stats.oldest >= timedelta(seconds=max_age):
        return f"oldest request waited {max_age:g}s"
    # Waiting longer to fill up could make a request miss its deadline: the batch may still
    # wait up to its max age and then take its backend's whole window to run.
    spec = routing.spec_of(settings, batch.backend)
    lead = timedelta(seconds=max_age) + (routing.window(spec) if spec else timedelta(0))
    if stats.due is not None and now + lead >= stats.due:
        return f"a request's complete_by ({stats.due.isoformat()}) is near"
    return None


async def _locked_building(session: AsyncSession, batch_id: int) -> Batch | None:
    """The batch, locked, if it is still building and no other replica holds it."""
    locked = await session.scalar(
        select(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.BUILDING)
        .with_for_update(skip_locked=True)
    )
    return locked
