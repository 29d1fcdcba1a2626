"""Remote file clean-up: an ended batch's files, the stale input file of a batch sent back to
wait, and the files of a batch an operator deletes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from app.backends.base import BatchAPI
from app.core.rules import leases, states
from app.core.rules.states import B
from app.core.runs.openai.common import Run, set_batch, snapshot
from app.core.runtime.clock import utcnow
from app.db.models import Batch

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


async def delete_files(run: Run, batch_id: int) -> None:
    """Delete the batch's remote files once its results are stored (OPENAI_DELETE_FILES)."""
    batch = await snapshot(run.db, batch_id)
    if batch is None or batch.files_deleted_at is not None:
        return
    file_ids = [f for f in (batch.input_file_id, batch.output_file_id, batch.error_file_id) if f]
    if not file_ids:
        return
    problem = await delete_remote_files(run.backend, file_ids)
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id)
        if batch is None:
            return
        if problem:
            states.note_batch(session, batch, f"could not delete its OpenAI files: {problem}")
        else:
            batch.files_deleted_at = utcnow()
            states.note_batch(session, batch, f"deleted its {len(file_ids)} OpenAI files")


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
