"""Retention: ended batches and requests are purged RETENTION_DAYS after they end, with
everything they own, so the database stops growing without bound.

A batch goes when it ended (done, failed, cancelled, expired) before the cutoff, every request
of it ended, nobody holds its lease, a drop-in batch's files are written, and nothing of it
still waits: no result delivery or batch event pending or retrying, no end still to announce.
With it go its requests, their deliveries, delivery attempts and audit trail, its timeline and
its event deliveries (ON DELETE CASCADE), and the files it produced (rows and bytes). A request
that never got a batch (cancelled while pending) goes on the same terms. An uploaded input file
is the user's: it keeps its own expiry.

An OpenAI batch's remote files are deleted before the rows that name them (with
OPENAI_DELETE_FILES): a purge first deletes the remote files of the batches it is about to take,
and a batch whose files cannot be deleted yet (OpenAI unreachable, the key refused) is skipped
and tried again on the next purge, never purged with its files left behind nameless.

Work is done in small chunks, each one transaction, rows claimed with FOR UPDATE SKIP LOCKED:
replicas purge side by side, and an operator's action that holds a batch or request (a
redelivery locks it) keeps it out of the chunk. A purge changes no status; it deletes, and
logs what it deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import BatchAPI
from app.core.dropin import file_store
from app.core.dropin.create import DROPIN_ORIGINS
from app.core.rules import leases
from app.core.rules.errors import InvalidInput, Problem
from app.core.rules.numbers import whole_number
from app.core.rules.states import BATCH_TERMINAL, DELIVERY_DUE, REQUEST_FINISHED
from app.core.runs.openai import remote_files
from app.db.models import Batch, BatchEvent, Delivery, DestinationEvent, File, Request
from app.db.session import Database, rows_changed
from app.ground.clock import utcnow

log = logging.getLogger(__name__)

BATCH_CHUNK = 100  # batches per transaction
REQUEST_BUDGET = 20_000  # a chunk takes no more batches once their requests pass this
LONE_CHUNK = 1_000  # batchless requests per transaction
VACUUM_PAGES = 4_096  # SQLite pages given back per round (16 MiB at the default page size)
MAX_DAYS = 36_500
# How long the operator's "purge now" works before it answers (an HTTP request waits for it).
NOW_SECONDS = 10.0
# No batch API to delete remote files at (OPENAI_DELETE_FILES=false, or none configured).
EMPTY: Mapping[str, BatchAPI] = {}


@dataclass
class Purged:
    """What a purge removed, of what age, and whether more waits (a full chunk was purged)."""

    batches: int = 0
    requests: int = 0
    files: int = 0
    more: bool = False
    days: int = 0

    def add(self, other: Purged) -> None:
        self.batches += other.batches
        self.requests += other.requests
        self.files += other.files
        self.more = other.more


def checked_days(value: Any) -> int:
    """`older than N days` as the operator gives it: a whole number from 1 to MAX_DAYS."""
    days = whole_number(str(value).strip(), MAX_DAYS) or 0
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(
            Problem(
                "invalid_days",
                "Invalid number of days",
                f"older_than_days must be a whole number from 1 to {MAX_DAYS}, not {value!r}.",
                "older_than_days",
            )
        )
    return days


async def step(db: Database, data_dir: str, days: int, remote: Mapping[str, BatchAPI] = EMPTY) -> bool:
    """One chunk of the scheduler's purge, what crashes left under DATA_DIR, then some space
    back (SQLite); True when more waits. With `remote` (batch API clients by backend name), the
    remote files of those backends' batches are deleted first."""
    purged = await purge_chunk(db, data_dir, utcnow() - timedelta(days=days), remote)
    await file_store.sweep_leftovers(db, data_dir)
    left = await db.reclaim_space(VACUUM_PAGES)
    return purged.more or left > 0


async def purge(
    db: Database, data_dir: str, days: int, budget_seconds: float, remote: Mapping[str, BatchAPI] = EMPTY
) -> Purged:
    """The operator's "purge now": chunk after chunk until nothing is left or `budget_seconds`
    have passed (then `more` says so), then space back (SQLite) within the same budget."""
    cutoff = utcnow() - timedelta(days=days)
    deadline = time.monotonic() + budget_seconds
    total = Purged(more=True, days=days)
    while total.more and time.monotonic() < deadline:
        total.add(await purge_chunk(db, data_dir, cutoff, remote))
    while await db.reclaim_space(VACUUM_PAGES) and time.monotonic() < deadline:
        pass
    return total


async def purge_chunk(
    db: Database, data_dir: str, cutoff: datetime, remote: Mapping[str, BatchAPI] = EMPTY
) -> Purged:
    """One chunk of batches, then one of batchless requests, each in its own transaction. With
    `remote` (OPENAI_DELETE_FILES), the remote files of the chunk's batches go first."""
    if remote:
        await _delete_remote_files_first(db, remote, cutoff, BATCH_CHUNK)
    purged = await _purge_batches(db, data_dir, cutoff, BATCH_CHUNK, list(remote))
    lone, lone_more = await _purge_lone_requests(db, cutoff, LONE_CHUNK)
    notices_more = await _purge_notices(db, cutoff, LONE_CHUNK)
    purged.requests += lone
    purged.more = purged.more or lone_more or notices_more
    return purged


async def _purge_notices(db: Database, cutoff: datetime, limit: int) -> bool:
    """Deliveries of no request and no batch (operational events: a destination paused or
    resumed, a delivery exhausted) that ended before the cutoff, and destination events older
    than it; returns whether more are left. Nothing else would ever remove them."""
    async with db.transaction() as session:
        ids = await _delete_chunk(
            session,
            Delivery,
            limit,
            Delivery.request_id.is_(None),
            Delivery.batch_event_id.is_(None),
            Delivery.status.not_in(DELIVERY_DUE),
            Delivery.created_at < cutoff,
        )
        events = await _delete(session, DestinationEvent, DestinationEvent.at < cutoff)
    if ids or events:
        log.info(
            "retention: purged %d operational event deliveries and %d destination events", len(ids), events
        )
    return len(ids) == limit


def _remote_files_left(backends: list[str]) -> ColumnElement[bool]:
    """A batch of these batch API backends that still names remote files not deleted."""
    return and_(
        Batch.backend.in_(backends),
        Batch.files_deleted_at.is_(None),
        or_(
            Batch.input_file_id.is_not(None),
            Batch.output_file_id.is_not(None),
            Batch.error_file_id.is_not(None),
        ),
    )


async def _delete_remote_files_first(
    db: Database, remote: Mapping[str, BatchAPI], cutoff: datetime, limit: int
) -> None:
    """Delete the remote files of purgeable batches that still have some, outside any
    transaction; a batch whose delete fails keeps its files' names and waits for the next purge."""
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(
                    Batch.id, Batch.backend, Batch.input_file_id, Batch.output_file_id, Batch.error_file_id
                )
                .where(*_purgeable_batches(session, cutoff), _remote_files_left(list(remote)))
                .order_by(Batch.finished_at, Batch.id)
                .limit(limit)
            )
        ).all()
    kept = []
    for batch_id, backend, *names in rows:
        file_ids = [f for f in names if f]
        if problem := await remote_files.delete_remote_files(remote[backend], file_ids):
            kept.append(f"{batch_id} ({problem})")
            continue
        async with db.transaction() as session:
            if (batch := await leases.lock(session, Batch, batch_id)) is not None:
                remote_files.deleted(session, batch, len(file_ids))
    if kept:
        log.warning(
            "retention: kept %d batches whose OpenAI files could not be deleted yet: %s",
            len(kept),
            "; ".join(kept),
        )


def _purgeable_batches(session: AsyncSession, cutoff: datetime) -> list[ColumnElement[bool]]:
    of_batch = Request.batch_id == Batch.id
    of_events = BatchEvent.batch_id == Batch.id
    due = Delivery.status.in_(DELIVERY_DUE)
    return [
        Batch.status.in_(list(BATCH_TERMINAL)),
        Batch.finished_at < cutoff,
        leases.lease_free(session, Batch),
        # A drop-in batch has ended for its face only once its files are written.
        or_(Batch.origin.not_in(DROPIN_ORIGINS), Batch.files_written_at.is_not(None)),
        ~exists().where(of_batch, Request.status.not_in(list(REQUEST_FINISHED))),
        ~exists().where(of_batch, Delivery.request_id == Request.id, due),
        ~exists().where(of_events, BatchEvent.announce),
        ~exists().where(of_events, Delivery.batch_event_id == BatchEvent.id, due),
    ]


async def _purge_batches(
    db: Database, data_dir: str, cutoff: datetime, limit: int, remote_first: list[str]
) -> Purged:
    async with db.transaction() as session:
        # Remote files go before the rows that name them: a batch still naming some waits.
        remote = [~_remote_files_left(remote_first)] if remote_first else []
        rows = (
            await session.execute(
                select(Batch.id, Batch.request_count)
                .where(*_purgeable_batches(session, cutoff), *remote)
                .order_by(Batch.finished_at, Batch.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        ids = _within_budget([(row[0], row[1]) for row in rows])
        if not ids:
            return Purged()
        files = list((await session.scalars(select(File).where(File.batch_id.in_(ids)))).all())
        requests = await _delete(session, Request, Request.batch_id.in_(ids))
        await _delete(session, File, File.batch_id.in_(ids))
        # Its timeline, and the deliveries of its events with their attempts, go by cascade.
        await _delete(session, Batch, Batch.id.in_(ids))
    file_store.remove_bytes(data_dir, files)
    log.info(
        "retention: purged %d batches ended before %s (ids %s) with %d requests and %d files",
        len(ids),
        cutoff.isoformat(timespec="seconds"),
        ", ".join(map(str, ids)),
        requests,
        len(files),
    )
    return Purged(len(ids), requests, len(files), more=len(ids) < len(rows) or len(rows) == limit)


def _within_budget(rows: list[tuple[int, int]]) -> list[int]:
    """The first batches whose requests stay within REQUEST_BUDGET (always at least one)."""
    ids: list[int] = []
    total = 0
    for batch_id, count in rows:
        if ids and total + count > REQUEST_BUDGET:
            break
        ids.append(batch_id)
        total += count
    return ids


async def _purge_lone_requests(db: Database, cutoff: datetime, limit: int) -> tuple[int, bool]:
    """Requests without a batch that ended before the cutoff; returns (how many, whether more)."""
    async with db.transaction() as session:
        ids = await _delete_chunk(
            session,
            Request,
            limit,
            Request.batch_id.is_(None),
            Request.status.in_(list(REQUEST_FINISHED)),
            Request.completed_at < cutoff,
            ~exists().where(Delivery.request_id == Request.id, Delivery.status.in_(DELIVERY_DUE)),
        )
    if ids:
        log.info(
            "retention: purged %d requests without a batch ended before %s (ids %d to %d)",
            len(ids),
            cutoff.isoformat(timespec="seconds"),
            ids[0],
            ids[-1],
        )
    return len(ids), len(ids) == limit


async def _delete_chunk(
    session: AsyncSession, model: Any, limit: int, *where: ColumnElement[bool]
) -> list[int]:
    """Delete up to `limit` rows matching `where`, oldest id first, skipping rows another
    process holds; returns their ids."""
    stmt = select(model.id).where(*where).order_by(model.id).limit(limit).with_for_update(skip_locked=True)
    ids = list((await session.scalars(stmt)).all())
    if ids:
        await _delete(session, model, model.id.in_(ids))
    return ids


async def _delete(session: AsyncSession, model: Any, where: ColumnElement[bool]) -> int:
    return await rows_changed(
        session, delete(model).where(where).execution_options(synchronize_session=False)
    )
