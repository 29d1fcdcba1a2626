"""Submission: admit ready batches, write each one's input file, upload it and create the remote
batch. A failure sends the batch back to ready with backoff, SUBMIT_ATTEMPTS times at most; a
refused key sends it back without counting (the gate is shut for everyone)."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from typing import IO, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.openai import AuthRefused, OpenAIError
from app.core.rules import leases, states
from app.core.rules.states import B, R
from app.core.runs.lines import input_line
from app.core.runs.openai import admission
from app.core.runs.openai.common import (
    LINES_PER_TRANSACTION,
    PARALLEL,
    Run,
    backoff,
    duration,
    error_text,
    fail_requests,
    reported,
    request_ids,
    set_batch,
)
from app.core.runs.openai.endings import INTERRUPTED, NOTHING_TO_SUBMIT, SUBMISSION_FAILED, SUBMIT_ATTEMPTS
from app.core.runs.openai.files import delete_remote_files
from app.core.runtime.clock import utcnow
from app.db.models import Batch, Request
from app.db.session import Database


async def submit_ready(run: Run) -> bool:
    """Admit ready batches oldest first within the token limits and submit them; True when any
    was admitted."""
    if not await run.gate.passes(run.backend, run.settings.current.openai_auth_recheck_seconds):
        await _mark_waiting(run.db, run.gate.stopped())
        return False
    await _recover_interrupted(run)
    await admission.estimate_missing(run.db)
    admitted = await admission.admit(run.db, run.settings.current, run.owner, PARALLEL)
    await asyncio.gather(*(_submit_one(run, batch_id) for batch_id in admitted))
    return bool(admitted)


async def _mark_waiting(db: Database, reason: str) -> None:
    """Say on every ready batch why nothing is submitted (one statement; a no-op once said)."""
    async with db.transaction() as session:
        await session.execute(
            update(Batch)
            .where(
                Batch.backend == "openai",
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
                .where(Batch.backend == "openai", Batch.status == B.SUBMITTING, leases.lease_free(Batch))
                .with_for_update(skip_locked=True)
            )
        ).all()
        orphans = [batch.input_file_id for batch in stale if batch.input_file_id]
        for batch in stale:
            await _submission_failed(run, session, batch, INTERRUPTED, retryable=True)
    if orphans:
        await delete_remote_files(run.backend, orphans)


async def _submit_one(run: Run, batch_id: int) -> None:
    file_id: str | None = None

    async def failed(exc: Exception) -> None:
        await _submit_failed(run, batch_id, exc, file_id)

    async with (
        reported(run, "submitting", batch_id, failed),
        leases.held(run.db, Batch, batch_id, run.owner, run.settings.current.lease_seconds),
    ):
        with tempfile.TemporaryFile() as file:
            lines, endpoint = await _write_input(run.db, batch_id, file)
            if not lines:
                await _nothing_to_submit(run.db, batch_id)
                return
            file_id = await run.backend.upload(file, f"batchgate-batch-{batch_id}.jsonl")
        await set_batch(run.db, batch_id, input_file_id=file_id)
        remote = await run.backend.create_batch(file_id, endpoint, {"batchgate_batch_id": str(batch_id)})
        await _created(run.db, batch_id, remote, lines)


async def _write_input(db: Database, batch_id: int, file: IO[bytes]) -> tuple[int, str]:
    """Number the batch's requests and write them as JSONL to `file`, a chunk at a time."""
    endpoint = await _number_lines(db, batch_id)
    written, after = 0, 0
    while True:
        async with db.transaction() as session:
            rows = (
                await session.execute(
                    select(Request.batch_line, Request.custom_id, Request.endpoint, Request.body)
                    .where(
                        Request.batch_id == batch_id,
                        Request.status == R.BATCHED,
                        Request.batch_line > after,
                    )
                    .order_by(Request.batch_line)
                    .limit(LINES_PER_TRANSACTION)
                )
            ).all()
        if not rows:
            return written, endpoint
        for line, custom_id, url, body in rows:
            file.write(input_line(custom_id, url, body).encode() + b"\n")
            written, after = line, line


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


async def _created(db: Database, batch_id: int, remote: dict[str, Any], lines: int) -> None:
    now = utcnow()
    async with db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.SUBMITTING)
        if batch is None:
            return
        batch.remote_batch_id = str(remote["id"])
        batch.remote_status = str(remote.get("status") or "validating")
        batch.run_failures = 0
        batch.output_repolls = 0
        batch.cancel_sent = False
        batch.files_deleted_at = None
        batch.next_attempt_at = now  # poll at once
        leases.release(batch)
        states.move_batch(
            session, batch, B.PROCESSING, f"OpenAI batch {batch.remote_batch_id} created ({lines} lines)"
        )
        await states.move_requests(
            session,
            await request_ids(session, batch_id, R.BATCHED),
            R.BATCHED,
            R.PROCESSING,
            submitted_at=now,
            inference_attempts=Request.inference_attempts + 1,
        )


async def _nothing_to_submit(db: Database, batch_id: int) -> None:
    async with db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.SUBMITTING)
        if batch is not None:
            leases.release(batch)
            states.move_batch(session, batch, B.FAILED, NOTHING_TO_SUBMIT.why())


async def _submit_failed(run: Run, batch_id: int, exc: Exception, file_id: str | None) -> None:
    message = error_text(exc)
    auth = isinstance(exc, AuthRefused)
    retryable = auth or not isinstance(exc, OpenAIError) or exc.retryable
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.SUBMITTING)
        if batch is None:
            return
        if auth:
            # Not the batch's fault: it waits, uncounted, until the key works again.
            leases.release(batch)
            batch.input_file_id = None
            states.move_batch(session, batch, B.READY, f"not submitted: {message}")
            batch.wait_reason = run.gate.stopped()
        else:
            await _submission_failed(run, session, batch, message, retryable)
    if file_id is not None:
        await delete_remote_files(run.backend, [file_id])
    run.on_results()


async def _submission_failed(
    run: Run, session: AsyncSession, batch: Batch, message: str, retryable: bool
) -> None:
    """Back to ready with backoff while attempts remain, else failed with its requests."""
    batch.run_failures += 1
    leases.release(batch)
    batch.input_file_id = None
    if retryable and batch.run_failures < SUBMIT_ATTEMPTS:
        delay = backoff(run.settings.current.openai_poll_seconds, batch.run_failures)
        batch.next_attempt_at = utcnow() + timedelta(seconds=delay)
        reason = (
            f"submission failed ({message}); attempt {batch.run_failures + 1} of {SUBMIT_ATTEMPTS} "
            f"in {duration(delay)}"
        )
        states.move_batch(session, batch, B.READY, reason)
        batch.wait_reason = reason
        return
    tried = f"after {batch.run_failures} attempts" if retryable else "refused"
    batch.error = SUBMISSION_FAILED.error(detail=message)
    states.move_batch(session, batch, B.FAILED, SUBMISSION_FAILED.why(detail=message, tried=tried))
    await fail_requests(session, batch, R.BATCHED, SUBMISSION_FAILED.error(detail=message))
