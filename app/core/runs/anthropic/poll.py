"""Polling: follow each remote batch until it has ended, send an operator's cancel, give up after
POLL_FAILURES_MAX consecutive failures or when the batch runs far past its expiry."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from app.backends.base import AuthRefused
from app.core import results
from app.core.rules import leases, states
from app.core.rules.states import B, R
from app.core.runs.anthropic import collect, endings
from app.core.runs.openai.common import (
    claim_followed,
    error_text,
    note_remote,
    poll_failed,
    reported,
    request_ids,
    set_batch,
    snapshot,
)
from app.core.runs.openai.common import give_up as give_up_batch
from app.core.runs.openai.endings import Ending
from app.db.models import Batch
from app.ground.clock import utcnow

if TYPE_CHECKING:
    from app.core.runs.anthropic.runner import AnthropicRunner

PARALLEL = 4


async def poll_due(run: AnthropicRunner) -> bool:
    """Poll this backend's remote batches that are due; True when more may be due."""
    if not await run.gate.passes(run.backend, run.recheck_seconds):
        return False
    ids = await claim_followed(run.db, run.name, run.owner, run.effective.current.lease_seconds)
    await asyncio.gather(*(_poll_one(run, batch_id) for batch_id in ids))
    return len(ids) == PARALLEL


async def _poll_one(run: AnthropicRunner, batch_id: int) -> None:
    async def failed(exc: Exception) -> None:
        if isinstance(exc, AuthRefused):
            await set_batch(run.db, batch_id, **leases.RELEASED)
        elif isinstance(exc, collect.ResultsGone):
            await give_up(run, batch_id, endings.RESULTS_EXPIRED, detail=exc.detail)
        else:
            await _poll_failed(run, batch_id, exc)

    async with (
        reported(run, "polling", batch_id, failed),
        leases.held(run.db, Batch, batch_id, run.owner, run.effective.current.lease_seconds),
    ):
        batch = await snapshot(run.db, batch_id)
        if batch is None or batch.remote_batch_id is None:
            return
        if batch.status == B.CANCELLING and not batch.cancel_sent:
            if await run.backend.cancel_batch(batch.remote_batch_id) == "gone":
                await _cancel_locally(run, batch_id, endings.REMOTE_GONE)
                return
            await set_batch(run.db, batch_id, cancel_sent=True)
        remote = await run.backend.get_batch(batch.remote_batch_id)
        await _note_remote(run, batch_id, remote)
        if remote.get("processing_status") == "ended":
            await collect.collect(run, batch_id, remote)
        else:
            await _still_running(run, batch, remote)


async def _still_running(run: AnthropicRunner, batch: Batch, remote: dict[str, Any]) -> None:
    """Poll again later, unless the batch or its cancel has run far past its time."""
    now = utcnow()
    expires = _when(remote.get("expires_at"))
    if expires is not None and now > expires + endings.OVERDUE_GRACE:
        await give_up(run, batch.id, endings.REMOTE_OVERDUE, status=remote.get("processing_status"))
    elif batch.status == B.CANCELLING and now - batch.status_changed_at > endings.CANCELLING_MAX:
        await _cancel_locally(run, batch.id, endings.CANCEL_OVERDUE, cap=endings.CANCELLING_MAX)
    else:
        # Jitter spreads many batches' polls instead of firing them on the same tick.
        delay = run.poll_seconds * random.uniform(0.8, 1.2)
        await set_batch(
            run.db,
            batch.id,
            next_attempt_at=now + timedelta(seconds=delay),
            run_failures=0,
            **leases.RELEASED,
        )


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


async def _note_remote(run: AnthropicRunner, batch_id: int, remote: dict[str, Any]) -> None:
    """Keep the remote status; a change goes on the timeline with Anthropic's counts."""
    status = str(remote.get("processing_status"))
    counts = remote.get("request_counts") or {}
    said = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    await note_remote(run.db, batch_id, status, lambda: f"Anthropic: {status} ({said})")


async def _poll_failed(run: AnthropicRunner, batch_id: int, exc: Exception) -> None:
    message = error_text(exc)
    await poll_failed(run.db, run.on_results, batch_id, "Anthropic", run.poll_seconds, message)


async def give_up(run: AnthropicRunner, batch_id: int, ending: Ending, **facts: Any) -> None:
    """End a batch whose remote side cannot be followed any more: its open requests fail."""
    await give_up_batch(run.db, run.on_results, batch_id, ending, **facts)


async def _cancel_locally(run: AnthropicRunner, batch_id: int, ending: Ending, **facts: Any) -> None:
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.CANCELLING)
        if batch is None:
            return
        leases.release(batch)
        ids = await request_ids(session, batch_id, R.PROCESSING)
        done = await results.close_without_result(
            session, ids, R.PROCESSING, R.CANCELLED, ending.error(**facts)
        )
        states.move_batch(session, batch, B.CANCELLED, ending.why(count=len(done), **facts))
    run.on_results()
