"""What every step of the OpenAI lifecycle shares: the runner's parts, per-batch reads and
writes, failing a batch's requests, and how a step's failure is reported."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import AuthRefused, BatchAPI, BatchAPIError, LineResult
from app.core import results
from app.core.rules import routing
from app.core.rules.effective import EffectiveSettings
from app.core.rules.states import B, R
from app.core.runs.openai.gate import AuthGate
from app.db.models import Batch, Request
from app.db.session import Database
from app.ground import logs

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
        spec = routing.spec_of(settings, self.backend.name)
        return (spec.poll_seconds if spec else None) or settings.openai_poll_seconds


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


@contextlib.asynccontextmanager
async def reported(
    run: Run, step: str, batch_id: int, failed: Callable[[Exception], Awaitable[None]]
) -> AsyncIterator[None]:
    """Run one batch's step; a failure goes to `failed`, and a refused key also shuts the gate.

    Only errors OpenAI answered with are expected: anything else is logged with its traceback.
    """
    try:
        with logs.bound(batch_id=batch_id):
            yield
    except AuthRefused as exc:
        run.gate.close(exc, run.effective.current.openai_auth_recheck_seconds)
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
