"""Submission: admit ready batches, write each one's input file, upload it and create the remote
batch, once (once.py): an attempt that follows one whose create may have reached OpenAI first
looks for the remote batch by its submission key and adopts it. A failure sends the batch back to
ready with backoff, SUBMIT_ATTEMPTS times at most; a refused key sends it back without counting
(the gate is shut for everyone)."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import AuthRefused, BatchAPIError
from app.core.rules import leases, states
from app.core.rules.states import B, R
from app.core.runs.lines import batch_page, input_line
from app.core.runs.openai import admission, once
from app.core.runs.openai.common import (
    LINES_PER_TRANSACTION,
    PARALLEL,
    Run,
    error_text,
    fail_requests,
    set_batch,
    start_following,
    submit_again,
    working_on,
)
from app.core.runs.openai.endings import INTERRUPTED, NOTHING_TO_SUBMIT, SUBMISSION_FAILED, SUBMIT_ATTEMPTS
from app.core.runs.openai.remote_files import delete_remote_files
from app.db.models import Batch, Request
from app.db.session import Database


async def submit_ready(run: Run) -> bool:
    """Admit ready batches oldest first within the token limits and submit them; True when any
    was admitted."""
    if not await run.gate.passes(run.backend, run.effective.current.openai_auth_recheck_seconds):
        await _mark_waiting(run.db, run.backend.name, run.gate.stopped())
        return False
    await _recover_interrupted(run)
    await admission.estimate_missing(run.db, run.backend.name)
    admitted = await admission.admit(run.db, run.effective.current, run.owner, PARALLEL, run.backend.name)
    await asyncio.gather(*(_submit_one(run, batch_id) for batch_id in admitted))
    return bool(admitted)


async def _mark_waiting(db: Database, backend: str, reason: str) -> None:
    """Say on every ready batch why nothing is submitted (one statement; a no-op once said)."""
    async with db.transaction() as session:
        await session.execute(
            update(Batch)
            .where(
                Batch.backend == backend,
                Batch.status == B.READY,
                or_(Batch.wait_reason.is_(None), Batch.wait_reason != reason),
            )
            .values(wait_reason=reason)
        )


async def _recover_interrupted(run: Run) -> None:
    """A submission whose process died (lease ran out) starts again from ready."""
    async with run.db.transaction() as session:
        stale = (
            await session.scalars(
                select(Batch)
                .where(Batch.backend == run.backend.name, Batch.status == B.SUBMITTING)
                .where(leases.lease_free(session, Batch))
                .with_for_update(skip_locked=True)
            )
        ).all()
        orphans = []
        for batch in stale:
            # With a key, a create may have used the input file: the next attempt looks first.
            file_id, maybe_created = batch.input_file_id, once.stored_key(batch) is not None
            await _submission_failed(run, session, batch, INTERRUPTED, True, maybe_created)
            if file_id and batch.input_file_id is None:
                orphans.append(file_id)
    if orphans:
        await delete_remote_files(run.backend, orphans)


@dataclass
class _Attempt:
    """What one submission attempt has done so far that a failure must know of."""

    file_id: str | None = None  # the input file it uploaded
    maybe_created: bool = False  # a create with the batch's key went out, now or before


async def _submit_one(run: Run, batch_id: int) -> None:
    attempt = _Attempt()

    async def failed(exc: Exception) -> None:
        await _submit_failed(run, batch_id, exc, attempt)

    async with working_on(run, "submitting", batch_id, failed) as batch:
        if batch is None:
            return
        attempt.maybe_created = once.stored_key(batch) is not None
        if await _adopted_earlier(run, batch):
            return
        if batch.run_failures >= SUBMIT_ATTEMPTS:  # this round only looked
            await _nothing_found(run, batch_id)
            return
        with tempfile.TemporaryFile() as file:
            lines, endpoint = await _write_input(run.db, batch_id, file)
            if not lines:
                await _nothing_to_submit(run.db, batch_id)
                return
            attempt.file_id = await run.backend.upload(file, f"batchgate-batch-{batch_id}.jsonl")
        await set_batch(run.db, batch_id, input_file_id=attempt.file_id)
        key = await once.key_for(run.db, batch)
        attempt.maybe_created = True
        remote, adopted = await once.create_or_adopt(run, batch_id, key, attempt.file_id, endpoint)
        found = " (found by its submission key: the create's answer was lost)" if adopted else ""
        await _created(run.db, batch_id, remote, f"created ({lines} lines){found}")
        if remote.get("input_file_id") not in (None, attempt.file_id):
            # An earlier attempt's create was the one that landed: this upload is not needed.
            await delete_remote_files(run.backend, [attempt.file_id])


async def _adopted_earlier(run: Run, batch: Batch) -> bool:
    """When an earlier attempt may have sent a create, look for its remote batch by the key and
    follow it (True). Otherwise its stale input file is deleted and a create is due (False)."""
    key = once.stored_key(batch)
    if key is None:
        return False
    remote = await once.find_remote(run.backend, key)
    if remote is not None:
        why = f"found by its submission key {key.value}: an earlier attempt created it"
        await _created(run.db, batch.id, remote, why)
        return True
    if batch.input_file_id:
        await delete_remote_files(run.backend, [batch.input_file_id])
        await set_batch(run.db, batch.id, input_file_id=None)
    return False


async def _write_input(db: Database, batch_id: int, file: IO[bytes]) -> tuple[int, str]:
    """Number the batch's requests and write them as JSONL to `file`, a chunk at a time."""
    endpoint = await _number_lines(db, batch_id)
    written, after = 0, 0
    while True:
        # Paged by id, which orders the lines as their numbers do (given in id order): SQLite
        # reads a page from the batch_id index in id order, where `batch_line > ?` read and
        # sorted every remaining request of the batch for each page (50 pages of 50,000 lines).
        async with db.transaction() as session:
            columns = (Request.id, Request.batch_line, Request.custom_id, Request.endpoint, Request.body)
            rows = (
                await session.execute(batch_page(columns, batch_id, R.BATCHED, after, LINES_PER_TRANSACTION))
            ).all()
        if not rows:
            return written, endpoint
        for request_id, line, custom_id, url, body in rows:
            file.write(input_line(custom_id, url, body).encode() + b"\n")
            written, after = line, request_id


async def _number_lines(db: Database, batch_id: int) -> str:
    """Give the batch's requests their line numbers (1, 2, …); returns the batch's endpoint."""
    async with db.transaction() as session:
        batch = await session.get(Batch, batch_id)
        assert batch is not None
        numbered = (
            select(Request.id, func.row_number().over(order_by=Request.id).label("line"))
            .where(Request.batch_id == batch_id, Request.status == R.BATCHED)
            .subquery()
        )
        await session.execute(
            update(Request)
            .where(Request.id == numbered.c.id)
            .values(batch_line=numbered.c.line)
            .execution_options(synchronize_session=False)
        )
        return batch.endpoint


async def _created(db: Database, batch_id: int, remote: dict[str, Any], how: str) -> None:
    """Follow the remote batch: record it, and the batch and its requests are processing."""
    async with db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.SUBMITTING)
        if batch is None:
            return
        if remote.get("input_file_id"):
            batch.input_file_id = str(remote["input_file_id"])
        batch.output_repolls = 0
        batch.files_deleted_at = None
        remote_id, status = str(remote["id"]), str(remote.get("status") or "validating")
        await start_following(session, batch, remote_id, status, f"OpenAI batch {remote_id} {how}")


async def _nothing_to_submit(db: Database, batch_id: int) -> None:
    async with db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.SUBMITTING)
        if batch is not None:
            leases.release(batch)
            states.move_batch(session, batch, B.FAILED, NOTHING_TO_SUBMIT.why())


async def _submit_failed(run: Run, batch_id: int, exc: Exception, attempt: _Attempt) -> None:
    message = error_text(exc)
    auth = isinstance(exc, AuthRefused)
    retryable = auth or not isinstance(exc, BatchAPIError) or exc.retryable
    # After a create went out, only a refusal proves no remote batch was made; until the next
    # attempt's lookup knows, the input file stays (a remote batch made from it needs it).
    keep_input = attempt.maybe_created and retryable
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.SUBMITTING)
        if batch is None:
            return
        if auth:
            # Not the batch's fault: it waits, uncounted, until the key works again.
            leases.release(batch)
            if not keep_input:
                batch.input_file_id = None
            states.move_batch(session, batch, B.READY, f"not submitted: {message}")
            batch.wait_reason = run.gate.stopped()
        else:
            await _submission_failed(run, session, batch, message, retryable, keep_input)
        dropped = batch.input_file_id is None
    if attempt.file_id is not None and dropped:
        await delete_remote_files(run.backend, [attempt.file_id])
    run.on_results()


async def _submission_failed(
    run: Run, session: AsyncSession, batch: Batch, message: str, retryable: bool, maybe_created: bool = False
) -> None:
    """Back to ready with backoff while attempts remain, else failed with its requests. When a
    create may have made a remote batch, the input file is kept for it, and once the attempts
    are spent one more round only looks for that batch (failing now would leave it unfollowed)."""
    tried = submit_again(session, batch, message, retryable, maybe_created, run.poll_seconds)
    if tried is not None:
        await _fail_submission(session, batch, message, tried)
    elif not maybe_created:
        batch.input_file_id = None


async def _nothing_found(run: Run, batch_id: int) -> None:
    """The last look found no remote batch: the submission fails as its last attempt did."""
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.SUBMITTING)
        if batch is None:
            return
        leases.release(batch)
        detail = str((batch.error or {}).get("message") or "no remote batch was found")
        tried = f"after {batch.run_failures} attempts and a last look that found no remote batch"
        await _fail_submission(session, batch, detail, tried)
    run.on_results()


async def _fail_submission(session: AsyncSession, batch: Batch, message: str, tried: str) -> None:
    """The batch fails with submission_failed, and so do its requests."""
    batch.input_file_id = None
    batch.error = SUBMISSION_FAILED.error(detail=message)
    states.move_batch(session, batch, B.FAILED, SUBMISSION_FAILED.why(detail=message, tried=tried))
    await fail_requests(session, batch, R.BATCHED, SUBMISSION_FAILED.error(detail=message))
