"""Polling: follow each remote batch by its status until it ends, send an operator's cancel, and
handle a batch OpenAI failed. Polling gives up after POLL_FAILURES_MAX consecutive failures."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import AuthRefused, LineResult
from app.core import results
from app.core.rules import leases, states
from app.core.rules.states import B, R
from app.core.runs.openai import collect, common, endings
from app.core.runs.openai.answers import files_missing, line_error, summary
from app.core.runs.openai.common import PARALLEL, Run
from app.core.runs.openai.endings import CANCELLING_MAX, OVERDUE_GRACE, Ending
from app.core.runs.openai.remote_files import clean_up
from app.db.models import Batch, Request
from app.ground.clock import utcnow
from app.ground.config import Settings

# OpenAI can say completed a moment before it fills in the file ids: poll again, this many
# times at most, before the files are read as they are.
OUTPUT_REPOLLS_MAX = 10


async def poll_due(run: Run) -> bool:
    """Poll the remote batches that are due; collect the finished ones. True when there may be
    more due than one round took."""
    if not await run.gate.passes(run.backend, run.effective.current.openai_auth_recheck_seconds):
        return False
    ids = await common.claim_followed(
        run.db, run.backend.name, run.owner, run.effective.current.lease_seconds
    )
    await asyncio.gather(*(_poll_one(run, batch_id) for batch_id in ids))
    return len(ids) == PARALLEL


async def _poll_one(run: Run, batch_id: int) -> None:
    async def failed(exc: Exception) -> None:
        if isinstance(exc, AuthRefused):
            await common.set_batch(run.db, batch_id, **leases.RELEASED)
        else:
            await _poll_failed(run, batch_id, exc)

    settings = run.effective.current
    async with common.reported(run, "polling", batch_id, failed):
        async with leases.held(run.db, Batch, batch_id, run.owner, settings.lease_seconds):
            batch = await common.snapshot(run.db, batch_id)
            if batch is None or batch.remote_batch_id is None:
                return
            if not await _send_cancel(run, batch):
                return
            remote = await run.backend.get_batch(batch.remote_batch_id)
            await _advance(run, batch, remote)
        if settings.openai_delete_files:
            await clean_up(run, batch_id)  # outside the lease: an ended batch let go of it


async def _send_cancel(run: Run, batch: Batch) -> bool:
    """Send an operator's cancel once; False when the remote batch is gone (ended here)."""
    if batch.status != B.CANCELLING or batch.cancel_sent:
        return True
    assert batch.remote_batch_id is not None
    if await run.backend.cancel_batch(batch.remote_batch_id) == "gone":
        await _cancel_locally(run, batch.id, endings.REMOTE_GONE)
        return False
    await common.set_batch(run.db, batch.id, cancel_sent=True)
    return True


async def _advance(run: Run, batch: Batch, remote: dict[str, Any]) -> None:
    status = str(remote.get("status"))
    await _note_remote(run, batch.id, remote)
    if status in collect.REMOTE_FINISHED:
        if status == "completed" and files_missing(remote) and batch.output_repolls < OUTPUT_REPOLLS_MAX:
            await _poll_later(run, batch.id, output_repolls=batch.output_repolls + 1)
            return
        await collect.collect(run, batch.id, remote)
    elif status == "failed":
        await _remote_failed(run, batch.id, remote)
    else:
        await _still_running(run, batch, status, remote.get("expires_at"))


async def _still_running(run: Run, batch: Batch, status: str, expires_at: Any) -> None:
    """Poll again later, unless the remote batch or its cancel has run far past its time."""
    now = utcnow()
    if isinstance(expires_at, int | float) and now.timestamp() > expires_at + OVERDUE_GRACE.total_seconds():
        await give_up(run, batch.id, endings.REMOTE_OVERDUE, status=status)
    elif batch.status == B.CANCELLING and now - batch.status_changed_at > CANCELLING_MAX:
        await _cancel_locally(run, batch.id, endings.CANCEL_OVERDUE, cap=CANCELLING_MAX)
    else:
        await _poll_later(run, batch.id, run_failures=0)


async def _poll_later(run: Run, batch_id: int, **values: Any) -> None:
    # Jitter spreads many batches' polls instead of firing them on the same tick.
    delay = run.poll_seconds * random.uniform(0.8, 1.2)
    await common.set_batch(
        run.db, batch_id, next_attempt_at=utcnow() + timedelta(seconds=delay), **values, **leases.RELEASED
    )


async def _note_remote(run: Run, batch_id: int, remote: dict[str, Any]) -> None:
    """Keep the remote status (a change goes on the timeline) and the counts OpenAI reports."""
    status = str(remote.get("status"))
    counts = remote.get("request_counts") or {}
    said = (
        f"OpenAI: {status} ({counts.get('completed', 0)} completed, {counts.get('failed', 0)} "
        f"failed of {counts.get('total', 0)})"
    )
    await common.note_remote(run.db, batch_id, status, lambda: said)


async def _poll_failed(run: Run, batch_id: int, exc: Exception) -> None:
    message = common.error_text(exc)
    await common.poll_failed(run.db, run.on_results, batch_id, "OpenAI", run.poll_seconds, message)


async def give_up(run: Run, batch_id: int, ending: Ending, **facts: Any) -> None:
    """End a batch whose remote side cannot be followed any more: its open requests fail."""
    await common.give_up(run.db, run.on_results, batch_id, ending, **facts)


async def _cancel_locally(run: Run, batch_id: int, ending: Ending, **facts: Any) -> None:
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.CANCELLING)
        if batch is not None:
            leases.release(batch)
            await _end_cancelled(session, batch, ending, **facts)
    run.on_results()


async def _end_cancelled(session: AsyncSession, batch: Batch, ending: Ending, **facts: Any) -> None:
    ids = await common.request_ids(session, batch.id, R.PROCESSING)
    done = await results.close_without_result(session, ids, R.PROCESSING, R.CANCELLED, ending.error(**facts))
    states.move_batch(session, batch, B.CANCELLED, ending.why(count=len(done), **facts))


# -- OpenAI failed the batch -----------------------------------------------------------------------


async def _remote_failed(run: Run, batch_id: int, remote: dict[str, Any]) -> None:
    """OpenAI failed the batch: errors.data says why (bad lines, or a full queue)."""
    errors = [e for e in ((remote.get("errors") or {}).get("data") or []) if isinstance(e, dict)]
    settings = run.effective.current
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.PROCESSING, B.CANCELLING)
        if batch is None:
            return
        leases.release(batch)
        batch.error = {**endings.BATCH_REFUSED.error(summary=summary(errors)), "errors": errors}
        if batch.status == B.CANCELLING:
            await _end_cancelled(session, batch, endings.FAILED_WHILE_CANCELLING, summary=summary(errors))
        elif any(e.get("code") == "token_limit_exceeded" for e in errors):
            await _token_limit(session, batch, settings)
        else:
            await _invalid_lines(session, batch, errors, settings.openai_resubmit_max)
    run.on_results()


async def _token_limit(session: AsyncSession, batch: Batch, settings: Settings) -> None:
    """The queue was full: not bad input. Back off 5, 10, 20, 40, 80 minutes, then fail."""
    batch.token_limit_retries += 1
    tries = settings.openai_token_limit_retries
    if batch.token_limit_retries > tries:
        await common.fail_requests(session, batch, R.PROCESSING, endings.TOKEN_LIMIT.error(tries=tries))
        states.move_batch(session, batch, B.FAILED, endings.TOKEN_LIMIT.why(tries=tries))
        return
    delay = settings.openai_token_limit_backoff_seconds * 2 ** (batch.token_limit_retries - 1)
    ids = await common.request_ids(session, batch.id, R.PROCESSING)
    await states.move_requests(session, ids, R.PROCESSING, R.BATCHED, batch_line=None)
    reason = (
        f"OpenAI token_limit_exceeded: retry {batch.token_limit_retries} of {tries} "
        f"in {common.duration(delay)}"
    )
    batch.next_attempt_at = utcnow() + timedelta(seconds=delay)
    batch.wait_reason = reason
    batch.remote_batch_id = batch.remote_status = None
    # A new submission: a fresh key, so that the refused remote batch is never adopted.
    batch.submission_key = batch.submission_key_at = None
    batch.error = None
    states.move_batch(session, batch, B.READY, reason)


async def _invalid_lines(
    session: AsyncSession, batch: Batch, errors: list[dict[str, Any]], resubmit_max: int
) -> None:
    """Fail the lines errors.data names, with its reason; the others did nothing wrong and go
    to a new batch. Without line numbers the whole batch was refused: all its requests fail."""
    by_line = {e["line"]: e for e in errors if isinstance(e.get("line"), int)}
    if not by_line:
        first = errors[0] if errors else {}
        error = endings.BATCH_REFUSED.error(code=first.get("code"), summary=summary(errors))
        await common.fail_requests(session, batch, R.PROCESSING, error)
        states.move_batch(session, batch, B.FAILED, endings.BATCH_REFUSED.why(summary=summary(errors)))
        return
    rows = (
        await session.execute(
            select(Request.id, Request.custom_id, Request.batch_line).where(
                Request.batch_id == batch.id, Request.status == R.PROCESSING
            )
        )
    ).all()
    named = [
        LineResult(rid, cid, None, line_error(by_line[line])) for rid, cid, line in rows if line in by_line
    ]
    await results.record(session, batch.id, named)
    others = [rid for rid, _, line in rows if line not in by_line]
    resubmitted = await collect.resubmit(session, batch.id, others, endings.OTHER_LINE_INVALID, resubmit_max)
    reason = endings.LINE_REFUSED.why(count=len(named), summary=summary(errors), resubmitted=resubmitted)
    states.move_batch(session, batch, B.FAILED, reason)
