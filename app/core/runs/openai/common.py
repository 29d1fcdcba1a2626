"""What every step of the OpenAI lifecycle shares: the runner's parts, per-batch reads and
writes, failing a batch's requests, and how a step's failure is reported."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import AuthRefused, BatchAPI, BatchAPIError, LineResult
from app.core import results
from app.core.rules import leases, routing, states
from app.core.rules.effective import EffectiveSettings
from app.core.rules.states import B, R
from app.core.runs.openai.endings import (
    POLL_FAILURES_MAX,
    REMOTE_UNREACHABLE,
    SUBMISSION_FAILED,
    SUBMIT_ATTEMPTS,
    Ending,
)
from app.core.runs.openai.gate import AuthGate
from app.db.models import Batch, Request
from app.db.session import Database
from app.ground import logs
from app.ground.clock import utcnow

log = logging.getLogger(__name__)

# Batches one round submits or polls at once.
PARALLEL = 4
LINES_PER_TRANSACTION = 1000
MAX_BACKOFF_SECONDS = 3600.0
# A remote batch in these statuses is followed: polled, cancelled, collected.
FOLLOWED = (B.PROCESSING, B.CANCELLING, B.COLLECTING)


def _nothing() -> None:
    return None


@dataclass(eq=False)
class Run:
    """The parts every step works with; the OpenAIRunner is one."""

    db: Database
    effective: EffectiveSettings
    backend: BatchAPI
    owner: str
    on_results: Callable[[], None] = _nothing
    gate: AuthGate = field(default_factory=AuthGate)

    @property
    def poll_seconds(self) -> float:
        """How often its batches are polled: its backend's poll_seconds, else OPENAI_POLL_SECONDS."""
        settings = self.effective.current
        return routing.poll_seconds(settings, self.backend.name, settings.openai_poll_seconds)

    @property
    def recheck_seconds(self) -> float:
        """How long a refused key waits before it is probed again."""
        return self.effective.current.openai_auth_recheck_seconds


class Gated(Protocol):
    """A runner whose steps a refused key stops: its gate, and when to probe the key again."""

    @property
    def gate(self) -> AuthGate: ...

    @property
    def recheck_seconds(self) -> float: ...


async def snapshot(db: Database, batch_id: int) -> Batch | None:
    """The batch as it is now, detached (read outside any transaction)."""
    async with db.transaction() as session:
        batch = await session.get(Batch, batch_id)
        if batch is not None:
            session.expunge(batch)
        return batch


async def set_batch(db: Database, batch_id: int, **values: Any) -> None:
    """Set columns of one batch in a transaction of its own."""
    async with db.transaction() as session:
        await session.execute(update(Batch).where(Batch.id == batch_id).values(**values))


async def request_ids(session: AsyncSession, batch_id: int, status: R) -> list[int]:
    """The ids of the batch's requests in `status`."""
    return list(
        (
            await session.scalars(
                select(Request.id).where(Request.batch_id == batch_id, Request.status == status)
            )
        ).all()
    )


async def fail_requests(session: AsyncSession, batch: Batch, from_status: R, error: dict[str, Any]) -> None:
    """Fail the batch's requests still in `from_status` with `error` (delivered as usual)."""
    ids = await request_ids(session, batch.id, from_status)
    if from_status == R.PROCESSING:
        await results.record(session, batch.id, [LineResult(rid, "", None, error) for rid in ids])
    else:
        failed = await results.close_without_result(session, ids, from_status, R.FAILED, error)
        batch.failed_count += len(failed)


class Worker(Gated, Protocol):
    """A runner that claims batches: its database, settings and name as a lease holder."""

    @property
    def db(self) -> Database: ...

    @property
    def effective(self) -> EffectiveSettings: ...

    @property
    def owner(self) -> str: ...


@contextlib.asynccontextmanager
async def working_on(
    run: Worker, step: str, batch_id: int, failed: Callable[[Exception], Awaitable[None]]
) -> AsyncIterator[Batch | None]:
    """Hold the lease on a claimed batch while the body works on it (reported as `reported`
    says); yields the batch as it is now, or None when it is gone."""
    async with (
        reported(run, step, batch_id, failed),
        leases.held(run.db, Batch, batch_id, run.owner, run.effective.current.lease_seconds),
    ):
        yield await snapshot(run.db, batch_id)


@contextlib.asynccontextmanager
async def reported(
    run: Gated, step: str, batch_id: int, failed: Callable[[Exception], Awaitable[None]]
) -> AsyncIterator[None]:
    """Run one batch's step; a failure goes to `failed`, and a refused key also shuts the gate.

    Only errors the API answered with are expected: anything else is logged with its traceback.
    """
    try:
        with logs.bound(batch_id=batch_id):
            yield
    except AuthRefused as exc:
        run.gate.close(exc, run.recheck_seconds)
        await failed(exc)
    except Exception as exc:
        if not isinstance(exc, BatchAPIError):
            log.exception("%s batch %s failed", step, batch_id)
        await failed(exc)


def error_text(exc: Exception) -> str:
    """What went wrong, as said on the timeline and in delivered errors."""
    return exc.message if isinstance(exc, BatchAPIError) else f"{type(exc).__name__}: {exc}"


def backoff(base: float, failures: int) -> float:
    """Doubling per failure, capped, with jitter so batches that failed together spread out."""
    return min(base * 2.0 ** (failures - 1), MAX_BACKOFF_SECONDS) * random.uniform(0.8, 1.2)


def duration(seconds: float) -> str:
    """A delay as a timeline reason says it."""
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:.3g}s"


async def claim_followed(db: Database, backend: str, owner: str, lease_seconds: float) -> list[int]:
    """Lease up to PARALLEL of `backend`'s remote batches whose poll is due, the longest due first."""
    async with db.transaction() as session:
        return await leases.claim(
            session,
            Batch,
            [
                Batch.backend == backend,
                Batch.status.in_(FOLLOWED),
                or_(Batch.next_attempt_at.is_(None), Batch.next_attempt_at <= utcnow()),
            ],
            owner,
            lease_seconds,
            PARALLEL,
            order_by=Batch.next_attempt_at,
        )


def submit_again(
    session: AsyncSession, batch: Batch, message: str, retryable: bool, maybe_created: bool, base: float
) -> str | None:
    """Count a failed submission and send the batch back to ready with backoff while attempts
    remain; once they are spent and a create may have made a remote batch, one more round only
    looks for it (failing now would leave it unfollowed). Returns None when it goes again, else
    how it was tried, for the failure the caller records."""
    batch.run_failures += 1
    leases.release(batch)
    last_look = maybe_created and batch.run_failures == SUBMIT_ATTEMPTS
    if not (retryable and (batch.run_failures < SUBMIT_ATTEMPTS or last_look)):
        return f"after {batch.run_failures} attempts" if retryable else "refused"
    delay = backoff(base, batch.run_failures)
    batch.next_attempt_at = utcnow() + timedelta(seconds=delay)
    if last_look:
        batch.error = SUBMISSION_FAILED.error(detail=message)  # what it fails with if nothing is found
        after = f"attempts spent; a last look for the batch its create may have made in {duration(delay)}"
    else:
        after = f"attempt {batch.run_failures + 1} of {SUBMIT_ATTEMPTS} in {duration(delay)}"
    reason = f"submission failed ({message}); {after}"
    states.move_batch(session, batch, B.READY, reason)
    batch.wait_reason = reason
    return None


async def start_following(
    session: AsyncSession, batch: Batch, remote_id: str, status: str, reason: str
) -> None:
    """The remote batch was created (or found): record it, poll it at once, and the batch and
    its requests are processing."""
    now = utcnow()
    batch.remote_batch_id = remote_id
    batch.remote_status = status
    batch.error = None  # a failure kept for a last look that found the batch after all
    batch.run_failures = 0
    batch.cancel_sent = False
    batch.next_attempt_at = now
    leases.release(batch)
    states.move_batch(session, batch, B.PROCESSING, reason)
    await states.move_requests(
        session,
        await request_ids(session, batch.id, R.BATCHED),
        R.BATCHED,
        R.PROCESSING,
        submitted_at=now,
        inference_attempts=Request.inference_attempts + 1,
    )


async def note_remote(db: Database, batch_id: int, status: str, reason: Callable[[], str]) -> None:
    """Keep the remote status; a change goes on the timeline (`reason()` says it)."""
    async with db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id)
        if batch is None or batch.remote_status == status:
            return
        batch.remote_status = status
        states.note_batch(session, batch, reason())


async def give_up(
    db: Database, on_results: Callable[[], None], batch_id: int, ending: Ending, **facts: Any
) -> None:
    """End a batch whose remote side cannot be followed any more: its open requests fail."""
    async with db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, *FOLLOWED)
        if batch is None:
            return
        leases.release(batch)
        batch.error = ending.error(**facts)
        await fail_requests(session, batch, R.PROCESSING, ending.error(**facts))
        states.move_batch(session, batch, B.FAILED, ending.why(**facts))
    on_results()


async def poll_failed(
    db: Database, on_results: Callable[[], None], batch_id: int, api: str, base: float, message: str
) -> None:
    """Count a failed poll of a remote batch and poll again after a backoff from `base`;
    after POLL_FAILURES_MAX in a row the batch gives up (remote_unreachable)."""
    async with db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, *FOLLOWED)
        if batch is None:
            return
        batch.run_failures += 1
        leases.release(batch)
        if batch.run_failures < POLL_FAILURES_MAX:
            delay = backoff(base, batch.run_failures)
            batch.next_attempt_at = utcnow() + timedelta(seconds=delay)
            states.note_batch(
                session,
                batch,
                f"talking to {api} failed ({message}); try {batch.run_failures + 1} of "
                f"{POLL_FAILURES_MAX} in {duration(delay)}",
            )
            return
    await give_up(db, on_results, batch_id, REMOTE_UNREACHABLE, failures=POLL_FAILURES_MAX, detail=message)
