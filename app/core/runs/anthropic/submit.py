"""Submission: claim this backend's ready batches, write each one's request list and create the
remote batch once (once.py). A failure sends the batch back to ready with backoff, SUBMIT_ATTEMPTS
times at most, then (when a create may have landed) one last round only looks for it; a refused
key sends it back uncounted while the gate is shut."""

from __future__ import annotations

import asyncio
import tempfile
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import AuthRefused, BatchAPIError
from app.core import results
from app.core.rules import leases, states
from app.core.rules.states import NATIVE_SCOPE, B, R
from app.core.runs.anthropic import once
from app.core.runs.anthropic.body import Written, write_body
from app.core.runs.anthropic.endings import (
    NOT_TRANSLATABLE,
    NOTHING_TO_SUBMIT,
    SUBMISSION_FAILED,
    SUBMIT_ATTEMPTS,
    TOO_LARGE,
)
from app.core.runs.openai import once as keys
from app.core.runs.openai.common import (
    error_text,
    fail_requests,
    request_ids,
    start_following,
    submit_again,
    working_on,
)
from app.db.models import Batch, Request
from app.ground.clock import utcnow

if TYPE_CHECKING:
    from app.core.runs.anthropic.runner import AnthropicRunner

PARALLEL = 4
INTERRUPTED = "submission interrupted (its process stopped)"


async def submit_ready(run: AnthropicRunner) -> bool:
    """Submit this backend's due ready batches, oldest first; True when any was claimed."""
    if not await run.gate.passes(run.backend, run.recheck_seconds):
        await _mark_waiting(run, run.gate.stopped())
        return False
    await _recover_interrupted(run)
    ids = await _claim(run)
    await asyncio.gather(*(_submit_one(run, batch_id) for batch_id in ids))
    return bool(ids)


async def _mark_waiting(run: AnthropicRunner, reason: str) -> None:
    async with run.db.transaction() as session:
        await session.execute(
            update(Batch)
            .where(
                Batch.backend == run.name,
                Batch.status == B.READY,
                or_(Batch.wait_reason.is_(None), Batch.wait_reason != reason),
            )
            .values(wait_reason=reason)
        )


async def _claim(run: AnthropicRunner) -> list[int]:
    async with run.db.transaction() as session:
        ready = (
            await session.scalars(
                select(Batch)
                .where(
                    Batch.backend == run.name,
                    Batch.status == B.READY,
                    or_(Batch.next_attempt_at.is_(None), Batch.next_attempt_at <= utcnow()),
                    leases.lease_free(session, Batch),
                )
                .order_by(Batch.id)
                .limit(PARALLEL)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for batch in ready:
            batch.wait_reason = None
            batch.leased_by = run.owner
            batch.leased_until = leases.until(session, run.effective.current.lease_seconds)
            states.move_batch(session, batch, B.SUBMITTING, f"submitting to Anthropic ({run.name})")
        return [batch.id for batch in ready]


async def _recover_interrupted(run: AnthropicRunner) -> None:
    """A submission whose process died (its lease ran out) starts again from ready; its key is
    kept, so the next attempt looks for a batch the dead one may have created."""
    async with run.db.transaction() as session:
        stale = (
            await session.scalars(
                select(Batch)
                .where(Batch.backend == run.name, Batch.status == B.SUBMITTING)
                .where(leases.lease_free(session, Batch))
                .with_for_update(skip_locked=True)
            )
        ).all()
        for batch in stale:
            await _failed(run, session, batch, INTERRUPTED, retryable=True)


async def _submit_one(run: AnthropicRunner, batch_id: int) -> None:
    async def failed(exc: Exception) -> None:
        await _submit_failed(run, batch_id, exc)

    async with working_on(run, "submitting", batch_id, failed) as batch:
        if batch is None:
            return
        key = keys.stored_key(batch)
        if key is not None:  # an earlier attempt may have created it: look first
            remote = await once.find_remote(run.db, run.backend, key, await _batched(run, batch_id))
            if remote is not None:
                await _created(run, batch_id, remote, "found by its size and time: an earlier create landed")
                return
        if batch.run_failures >= SUBMIT_ATTEMPTS:  # this round only looked
            await _end(run, batch_id, str((batch.error or {}).get("message") or "no remote batch found"))
            return
        key = await keys.key_for(run.db, batch)
        with tempfile.TemporaryFile() as file:
            written = await write_body(run.db, batch_id, key.value, file)
            if not await _settle_unsent(run, batch_id, written):
                return
            remote, adopted = await once.create_or_adopt(run, key, file, written.sent)
        found = " (found again: the create's answer was lost)" if adopted else ""
        await _created(run, batch_id, remote, f"created ({written.sent} requests){found}")


async def _batched(run: AnthropicRunner, batch_id: int) -> int:
    """How many requests the batch still has to send (after a lost create: how many it sent)."""
    async with run.db.transaction() as session:
        return len(await request_ids(session, batch_id, R.BATCHED))


async def _settle_unsent(run: AnthropicRunner, batch_id: int, written: Written) -> bool:
    """Fail the requests that cannot be translated; send those beyond Anthropic's limits back
    to batching (a drop-in batch, whose membership is fixed, fails whole). False when nothing
    is left to create."""
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.SUBMITTING)
        if batch is None:
            return False
        for request_id, why in written.refused.items():
            error = NOT_TRANSLATABLE.error(detail=why)
            failed = await results.close_without_result(session, [request_id], R.BATCHED, R.FAILED, error)
            batch.failed_count += len(failed)
        if written.left_over:
            scopes = await session.scalars(select(Request.scope).where(Request.batch_id == batch_id).limit(1))
            if scopes.first() != NATIVE_SCOPE:
                await _fail_batch(session, batch, TOO_LARGE.message, TOO_LARGE.error())
                return False
            await states.move_requests(session, written.left_over, R.BATCHED, R.PENDING, batch_id=None)
            batch.request_count -= len(written.left_over)
            states.note_batch(
                session,
                batch,
                f"{len(written.left_over)} requests beyond Anthropic's limits go to a new batch",
            )
        if written.sent == 0:
            leases.release(batch)
            why = NOTHING_TO_SUBMIT.why() if not written.refused else "no request could be sent to Anthropic"
            states.move_batch(session, batch, B.FAILED, why)
            return False
    return True


async def _created(run: AnthropicRunner, batch_id: int, remote: dict[str, Any], how: str) -> None:
    """Follow the remote batch: record it; the batch and its requests are processing."""
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.SUBMITTING)
        if batch is None:
            return
        remote_id, status = str(remote["id"]), str(remote.get("processing_status") or "in_progress")
        await start_following(session, batch, remote_id, status, f"Anthropic batch {remote_id} {how}")


async def _submit_failed(run: AnthropicRunner, batch_id: int, exc: Exception) -> None:
    message = error_text(exc)
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.SUBMITTING)
        if batch is None:
            return
        if isinstance(exc, AuthRefused):
            # Not the batch's fault: it waits, uncounted, until the key works again.
            leases.release(batch)
            states.move_batch(session, batch, B.READY, f"not submitted: {message}")
            batch.wait_reason = run.gate.stopped()
        else:
            retryable = not isinstance(exc, BatchAPIError) or exc.retryable
            await _failed(run, session, batch, message, retryable)
    run.on_results()


async def _failed(
    run: AnthropicRunner, session: AsyncSession, batch: Batch, message: str, retryable: bool
) -> None:
    """Back to ready with backoff while attempts remain; after the last, when a create may have
    gone out, one more round only looks for it; else failed with its requests."""
    maybe_created = keys.stored_key(batch) is not None
    tried = submit_again(session, batch, message, retryable, maybe_created, run.poll_seconds)
    if tried is not None:
        await _fail_batch(session, batch, SUBMISSION_FAILED.why(detail=message, tried=tried), message)


async def _end(run: AnthropicRunner, batch_id: int, detail: str) -> None:
    """The last look found no remote batch: the submission fails as its last attempt did."""
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.SUBMITTING)
        if batch is None:
            return
        leases.release(batch)
        tried = f"after {batch.run_failures} attempts and a last look that found no remote batch"
        await _fail_batch(session, batch, SUBMISSION_FAILED.why(detail=detail, tried=tried), detail)
    run.on_results()


async def _fail_batch(session: AsyncSession, batch: Batch, reason: str, detail: str | dict[str, Any]) -> None:
    """The batch fails (reason on its timeline) and so do its requests not yet sent."""
    error = detail if isinstance(detail, dict) else SUBMISSION_FAILED.error(detail=detail)
    leases.release(batch)
    batch.error = error
    states.move_batch(session, batch, B.FAILED, reason)
    await fail_requests(session, batch, R.BATCHED, error)
