"""The end of a drop-in batch: expire it when its completion window closes, then write its
output and error files (OpenAI's shape) once it has ended, after which the face calls it done.

Both run as one scheduler step; each batch is claimed under a lease, so replicas share the work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy import select

from app.core import results
from app.core.dropin import file_store
from app.core.dropin.create import ANTHROPIC_ORIGIN, DROPIN_ORIGINS
from app.core.read import exports
from app.core.rules import leases, states
from app.core.rules.states import BATCH_TERMINAL, B, R
from app.db.models import Batch, File, Request
from app.db.session import Database
from app.ground.clock import utcnow

EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
OUTPUT_FILE_MAX_BYTES = 2**62  # produced files are as large as their batch
# Output and error files are kept this long, as OpenAI keeps them (unless deleted earlier), when
# the create's output_expires_after says nothing.
OUTPUT_FILE_RETENTION = timedelta(days=30)
CLAIM = 10
# A batch in these statuses can still expire; submitting and cancelling are moving on their own.
EXPIRABLE: dict[str, R] = {B.READY: R.BATCHED, B.PROCESSING: R.PROCESSING}


async def step(db: Database, data_dir: str, owner: str, lease_seconds: float) -> bool:
    """Expire overdue drop-in batches and files, then write the files of ended batches; True
    when more wait."""
    await expire_overdue(db)
    await file_store.delete_expired(db, data_dir)
    return await write_files(db, data_dir, owner, lease_seconds) == CLAIM


async def expire_overdue(db: Database) -> list[int]:
    """End drop-in batches still unfinished at `expires_at`: finished lines keep their results,
    the rest end `expired` with `batch_expired` (as OpenAI does)."""
    expired = []
    async with db.transaction() as session:
        overdue = (
            await session.scalars(
                select(Batch)
                .where(
                    Batch.origin.in_(DROPIN_ORIGINS),
                    Batch.status.in_(list(EXPIRABLE)),
                    Batch.expires_at <= utcnow(),
                )
                .limit(CLAIM)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for batch in overdue:
            ids = list((await session.scalars(select(Request.id).where(Request.batch_id == batch.id))).all())
            ended = await results.close_without_result(
                session, ids, EXPIRABLE[batch.status], R.EXPIRED, EXPIRED_ERROR
            )
            # A local run still holding the batch stops at its next renewal.
            leases.release(batch)
            states.move_batch(
                session, batch, B.EXPIRED, f"completion window ended; {len(ended)} requests expired"
            )
            expired.append(batch.id)
    return expired


async def write_files(db: Database, data_dir: str, owner: str, lease_seconds: float) -> int:
    """Write the output and error files of ended drop-in batches; returns how many were claimed."""
    async with db.transaction() as session:
        ids = await leases.claim(
            session,
            Batch,
            [
                Batch.origin.in_(DROPIN_ORIGINS),
                Batch.status.in_(list(BATCH_TERMINAL)),
                Batch.files_written_at.is_(None),
            ],
            owner,
            lease_seconds,
            CLAIM,
        )
    for batch_id in ids:
        await _write(db, data_dir, batch_id)
    return len(ids)


async def _write(db: Database, data_dir: str, batch_id: int) -> None:
    async with db.transaction() as session:
        batch = await session.get(Batch, batch_id)
        assert batch is not None
        origin, team, succeeded, unfinished = (
            batch.origin,
            batch.owner,
            batch.completed_count,
            batch.request_count - batch.completed_count,
        )
        seconds = batch.dropin_output_expires_seconds
    # The create's output_expires_after, anchored at each file's creation as OpenAI anchors it.
    lifetime = OUTPUT_FILE_RETENTION if seconds is None else timedelta(seconds=seconds)
    produced: dict[str, str | None] = {"output": None, "error": None}
    # Anthropic results are read straight from the requests (GET .../results); OpenAI's are file_store.
    if origin != ANTHROPIC_ORIGIN:
        files: tuple[tuple[exports.Kind, int], ...] = (("output", succeeded), ("error", unfinished))
        for kind, count in files:
            if count > 0:
                chunks = await exports.batch_file(db, batch_id, kind, results.file_line)
                stored = await _store(db, data_dir, (batch_id, team), kind, chunks, lifetime)
                produced[kind] = stored.id
    async with db.transaction() as session:
        batch = await session.get(Batch, batch_id)
        assert batch is not None
        batch.dropin_output_file_id = produced["output"]
        batch.dropin_error_file_id = produced["error"]
        batch.files_written_at = utcnow()
        leases.release(batch)


async def _store(
    db: Database,
    data_dir: str,
    batch: tuple[int, str],
    kind: str,
    chunks: AsyncIterator[bytes],
    lifetime: timedelta,
) -> File:
    """The batch's (id, owner) output or error file: its team's, like the batch."""
    batch_id, team = batch
    return await file_store.receive(
        db,
        data_dir,
        chunks,
        filename=f"batch_{batch_id}_{kind}.jsonl",
        max_bytes=OUTPUT_FILE_MAX_BYTES,
        terms=lambda: ("batch_output", lifetime),
        batch_id=batch_id,
        owner=team,
    )
