"""Remote file clean-up: an ended batch's files, the stale input file of a batch sent back to
wait, and the files of a batch an operator deletes.

An ended batch's delete that fails (OpenAI down for a while) is tried again with backoff, up to
FILE_DELETE_ATTEMPTS tries; then it stops, logged, on the batch's timeline and in its `remote`
(files_delete_attempts, files_delete_error). Retention deletes them before it purges the batch
(app.core.retention), so no row that names a remote file goes before the file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import BatchAPI
from app.core.rules import leases, states
from app.core.rules.states import B
from app.core.runs.openai.common import PARALLEL, Run, backoff, duration, set_batch, snapshot
from app.core.runs.openai.endings import FILE_DELETE_ATTEMPTS
from app.db.models import Batch
from app.ground.clock import utcnow

log = logging.getLogger(__name__)


async def delete_remote_files(backend: BatchAPI, file_ids: Sequence[str]) -> str | None:
    """Delete remote files (one already gone is fine); returns the first problem, if any."""
    problem = None
    for file_id in file_ids:
        try:
            await backend.delete_file(file_id)
        except Exception as exc:
            log.warning("could not delete OpenAI file %s: %s", file_id, exc)
            problem = problem or str(exc)
    return problem


def remote_file_ids(batch: Batch) -> list[str]:
    """The batch's remote files not deleted yet."""
    if batch.files_deleted_at is not None:
        return []
    return [f for f in (batch.input_file_id, batch.output_file_id, batch.error_file_id) if f]


async def delete_files(run: Run, batch_id: int) -> None:
    """Delete the batch's remote files once its results are stored (OPENAI_DELETE_FILES); a
    failure is tried again later (`retry_due`), up to FILE_DELETE_ATTEMPTS tries in all."""
    batch = await snapshot(run.db, batch_id)
    if batch is None or not (file_ids := remote_file_ids(batch)):
        return
    problem = await delete_remote_files(run.backend, file_ids)
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id)
        if batch is None or batch.files_deleted_at is not None:
            return
        if problem is None:
            deleted(session, batch, len(file_ids))
        else:
            _failed_delete(session, batch, problem, run.poll_seconds)
        leases.release(batch)


def deleted(session: AsyncSession, batch: Batch, count: int) -> None:
    """Record that the batch's remote files are gone."""
    batch.files_deleted_at = utcnow()
    batch.files_delete_next_at = None
    states.note_batch(session, batch, f"deleted its {count} OpenAI files")


def _failed_delete(session: AsyncSession, batch: Batch, problem: str, base_seconds: float) -> None:
    """Count a failed delete: try again after a backoff, or give up visibly once the tries are spent."""
    batch.files_delete_attempts += 1
    batch.files_delete_error = problem
    tries = f"attempt {batch.files_delete_attempts} of {FILE_DELETE_ATTEMPTS}"
    if batch.files_delete_attempts >= FILE_DELETE_ATTEMPTS:
        batch.files_delete_next_at = None
        log.warning("gave up deleting the OpenAI files of batch %s (%s): %s", batch.id, tries, problem)
        states.note_batch(session, batch, f"gave up deleting its OpenAI files ({tries}): {problem}")
        return
    delay = backoff(base_seconds, batch.files_delete_attempts)
    batch.files_delete_next_at = utcnow() + timedelta(seconds=delay)
    states.note_batch(
        session, batch, f"could not delete its OpenAI files ({tries}; again in {duration(delay)}): {problem}"
    )


async def retry_due(run: Run) -> bool:
    """Try again the remote file deletes that failed and are due; True when a full round was due."""
    async with run.db.transaction() as session:
        ids = await leases.claim(
            session,
            Batch,
            [
                Batch.backend == run.backend.name,
                Batch.status.in_(list(states.BATCH_TERMINAL)),
                Batch.files_deleted_at.is_(None),
                Batch.files_delete_next_at <= utcnow(),
            ],
            run.owner,
            run.effective.current.lease_seconds,
            PARALLEL,
            order_by=Batch.files_delete_next_at,
        )
    for batch_id in ids:
        await delete_files(run, batch_id)
    return len(ids) == PARALLEL


async def clean_up(run: Run, batch_id: int) -> None:
    """Delete remote files nothing will read again: all of an ended batch's, and the old
    input file of a batch sent back to wait (token_limit_exceeded; it is uploaded afresh)."""
    batch = await snapshot(run.db, batch_id)
    if batch is None:
        return
    if batch.status in states.BATCH_TERMINAL:
        await delete_files(run, batch_id)
    elif (
        batch.status == B.READY
        and batch.input_file_id
        and batch.remote_batch_id is None
        and not await delete_remote_files(run.backend, [batch.input_file_id])
    ):
        await set_batch(run.db, batch_id, input_file_id=None)
