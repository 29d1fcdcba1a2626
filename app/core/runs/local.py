"""Submitting ready batches and running local ones.

The local backend has no remote batch to poll: "submitting" a batch means marking it processing,
and the runner executes its requests here, storing results in chunks as they finish. The runner
holds a lease on the batch and renews it while it works; if the process dies, the lease runs out
and any process picks the batch up again, running only the requests that have no result yet.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import LineResult, LineRunner
from app.core import results
from app.core.rules import leases, states
from app.core.rules.effective import EffectiveSettings
from app.core.runs.lines import unfinished_lines
from app.db.models import Batch, Request
from app.db.session import Database, is_unavailable
from app.ground import logs
from app.ground.clock import utcnow
from app.ground.statuses import BatchStatus, RequestStatus

log = logging.getLogger(__name__)

FLUSH_EVERY_SECONDS = 0.1
FLUSH_EVERY_RESULTS = 100
PARALLEL_BATCHES = 8
MAX_RUN_FAILURES = 3
RUN_RETRY_SECONDS = 1.0
GIVE_UP_CHUNK = 5000


async def submit_ready(db: Database, backends: Sequence[str], limit: int = 20) -> list[int]:
    """Move ready batches of these line-running backends to processing (an inference server
    accepts a batch at once)."""
    if not backends:
        return []
    async with db.transaction() as session:
        batches = (
            await session.scalars(
                select(Batch)
                .where(Batch.status == BatchStatus.READY, Batch.backend.in_(list(backends)))
                .order_by(Batch.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        now = utcnow()
        for batch in batches:
            states.move_batch(
                session, batch, BatchStatus.SUBMITTING, f"handed to the {batch.backend} backend"
            )
            states.move_batch(session, batch, BatchStatus.PROCESSING, f"{batch.backend} backend runs it now")
            ids = (await session.scalars(select(Request.id).where(Request.batch_id == batch.id))).all()
            await states.move_requests(
                session, ids, RequestStatus.BATCHED, RequestStatus.PROCESSING, submitted_at=now
            )
    return [b.id for b in batches]


class LocalRunner:
    """Runs the processing batches of one line-running backend in this process, a few at a time."""

    def __init__(
        self,
        db: Database,
        effective: EffectiveSettings,
        backend: LineRunner,
        owner: str,
        on_results: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.effective = effective
        self.backend = backend
        self.owner = owner
        self.on_results = on_results
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.holds: dict[int, leases.Hold] = {}
        # Runs past their last result: ending the batch (and with it their lease) themselves.
        self.ending: set[int] = set()

    async def claim_and_start(self) -> int:
        """Claim free processing batches up to the parallel limit and start running them.

        Each claim counts as a run before it starts: a run that kills its process (memory, a
        crash) never records its failure, so the count cannot wait for it. A batch claimed more
        than MAX_RUN_FAILURES times without finishing fails instead of running again.
        """
        await self.stop_lost()
        self.tasks = {bid: t for bid, t in self.tasks.items() if not t.done()}
        self.holds = {bid: self.holds[bid] for bid in self.tasks}
        self.ending &= set(self.tasks)
        room = PARALLEL_BATCHES - len(self.tasks)
        if room <= 0:
            return 0
        hold = leases.Hold.new(self.owner)
        async with self.db.transaction() as session:
            ids = await leases.claim(
                session,
                Batch,
                # Never a batch this process still runs (its lease may have run out meanwhile).
                [
                    Batch.status == BatchStatus.PROCESSING,
                    Batch.backend == self.backend.name,
                    Batch.id.not_in(list(self.tasks)),
                ],
                self.owner,
                self.effective.current.lease_seconds,
                room,
                token=hold.token,
            )
            spent = await self._count_runs(session, ids)
        for batch_id in ids:
            if batch_id not in spent:
                self.holds[batch_id] = hold
                self.tasks[batch_id] = asyncio.create_task(
                    self._run(batch_id, hold), name=f"local-batch-{batch_id}"
                )
        if spent:
            self.on_results()
        return len(ids) - len(spent)

    async def _count_runs(self, session: AsyncSession, ids: list[int]) -> set[int]:
        """Count a run for each claimed batch; fail those past MAX_RUN_FAILURES (returned)."""
        if not ids:
            return set()
        await session.execute(
            update(Batch)
            .where(Batch.id.in_(ids))
            .values(run_failures=Batch.run_failures + 1)
            .execution_options(synchronize_session=False)
        )
        spent = (
            await session.scalars(
                select(Batch).where(Batch.id.in_(ids), Batch.run_failures > MAX_RUN_FAILURES)
            )
        ).all()
        for batch in spent:
            batch.run_failures -= 1  # this claim does not run
            await _give_up(session, batch, "its runs ended without finishing (the process stopped)")
        return {batch.id for batch in spent}

    async def stop_lost(self) -> None:
        """Stop at once the runs whose batch this run no longer holds: cancelled or deleted by
        an operator (their actions wake the run step), or taken over. Their calls in flight are
        cancelled rather than left to run until the next lease renewal notices."""
        running = [bid for bid, task in self.tasks.items() if not task.done() and bid not in self.ending]
        if not running:
            return
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    select(Batch.id, Batch.leased_by, Batch.lease_token).where(Batch.id.in_(running))
                )
            ).all()
        still = {row.id for row in rows if self.holds[row.id].holds(row)}
        for batch_id in running:
            if batch_id not in still:
                log.info("stopping the run of batch %s: it is no longer this run's", batch_id)
                self.tasks[batch_id].cancel()

    async def stop(self) -> None:
        """Stop running batches; their unfinished requests are picked up on the next start.
        A run stopped this way did not fail, so it is not counted against its batch."""
        running = [bid for bid, task in self.tasks.items() if not task.done()]
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
        if not running:
            return
        try:
            async with self.db.transaction() as session:
                await session.execute(
                    update(Batch)
                    .where(Batch.id.in_(running), Batch.leased_by == self.owner, Batch.run_failures > 0)
                    .values(run_failures=Batch.run_failures - 1)
                    .execution_options(synchronize_session=False)
                )
        except Exception:
            log.exception("could not uncount the stopped runs of batches %s", running)

    async def _run(self, batch_id: int, hold: leases.Hold) -> None:
        with logs.bound(batch_id=batch_id):
            await self._run_bound(batch_id, hold)

    async def _run_bound(self, batch_id: int, hold: leases.Hold) -> None:
        try:
            async with leases.held(self.db, Batch, batch_id, hold, self.effective.current.lease_seconds):
                lines = unfinished_lines(self.db, batch_id)
                await self._store_as_they_come(batch_id, hold, self.backend.run(lines))
                self.ending.add(batch_id)
                await self._finish(batch_id, hold)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("local batch %s stopped with an error", batch_id)
            await self._record_failure(batch_id, hold, exc)

    async def _store_as_they_come(
        self, batch_id: int, hold: leases.Hold, results: AsyncIterator[LineResult]
    ) -> None:
        """Store results in chunks: every FLUSH_EVERY_RESULTS, and never later than
        FLUSH_EVERY_SECONDS after the first unstored one, even while the next is slow to come."""
        buffer: list[LineResult] = []
        flush_at = math.inf
        upcoming: asyncio.Future[LineResult] | None = None
        try:
            while True:
                upcoming = upcoming or asyncio.ensure_future(anext(results))
                await asyncio.wait(
                    {upcoming}, timeout=max(flush_at - time.monotonic(), 0) if buffer else None
                )
                if upcoming.done():
                    try:
                        buffer.append(upcoming.result())
                    except StopAsyncIteration:
                        break
                    upcoming = None
                    flush_at = min(flush_at, time.monotonic() + FLUSH_EVERY_SECONDS)
                if len(buffer) >= FLUSH_EVERY_RESULTS or (buffer and time.monotonic() >= flush_at):
                    await self._flush(batch_id, hold, buffer)
                    buffer, flush_at = [], math.inf
            await self._flush(batch_id, hold, buffer)
        finally:
            if upcoming is not None and not upcoming.done():
                upcoming.cancel()

    async def _flush(self, batch_id: int, hold: leases.Hold, buffer: list[LineResult]) -> None:
        if not buffer:
            return
        try:
            async with self.db.transaction() as session:
                stored = await results.record(session, batch_id, buffer, hold)
        except Exception as exc:
            if is_unavailable(exc):
                raise  # no line is to blame: the run fails as a whole and is taken up again
            log.exception("%s results of batch %s failed to store together", len(buffer), batch_id)
            stored = sum([await self._store_alone(batch_id, hold, result) for result in buffer])
        if stored:
            self.on_results()

    async def _store_alone(self, batch_id: int, hold: leases.Hold, result: LineResult) -> int:
        """Store one result; one the database refuses becomes its request's error, so a poisoned
        answer fails its own line, not the batch. (A database that is down refuses the error
        too: that raises, and the run fails as any crashed run does.)"""
        try:
            async with self.db.transaction() as session:
                return await results.record(session, batch_id, [result], hold)
        except Exception as exc:
            message = f"the result could not be stored: {type(exc).__name__}: {exc}"
            refused = replace(
                result, response=None, error={"code": "result_not_stored", "message": message[:1000]}
            )
            async with self.db.transaction() as session:
                return await results.record(session, batch_id, [refused], hold)

    async def _finish(self, batch_id: int, hold: leases.Hold) -> None:
        async with self.db.transaction() as session:
            batch = await leases.lock(session, Batch, batch_id, BatchStatus.PROCESSING)
            if batch is None or not hold.holds(batch):
                return
            unfinished = await session.scalar(
                select(func.count()).where(
                    Request.batch_id == batch_id, Request.status == RequestStatus.PROCESSING
                )
            )
            if unfinished:
                return  # a result was lost between run and store; the next claim reruns those
            reason = f"{batch.completed_count} succeeded, {batch.failed_count} failed"
            states.move_batch(session, batch, BatchStatus.COLLECTING, "all requests ran")
            states.move_batch(session, batch, BatchStatus.DONE, reason)
            leases.release(batch)

    async def _record_failure(self, batch_id: int, hold: leases.Hold, exc: Exception) -> None:
        """Retry a crashed run later with backoff; once it has run MAX_RUN_FAILURES times, fail
        what is left.

        A run only crashes on a bug or a database fault (inference errors are results), so the
        retries are bounded: a batch must never loop forever.
        """
        message = f"{type(exc).__name__}: {exc}"
        try:
            async with self.db.transaction() as session:
                batch = await leases.lock(session, Batch, batch_id, BatchStatus.PROCESSING)
                if batch is None or not hold.holds(batch):
                    return
                if batch.run_failures < MAX_RUN_FAILURES:
                    delay = min(
                        RUN_RETRY_SECONDS * 2 ** (batch.run_failures - 1),
                        self.effective.current.lease_seconds,
                    )
                    batch.leased_until = leases.until(session, delay)
                    return
                await _give_up(session, batch, message)
            self.on_results()
        except Exception:
            log.exception("could not record the failure of local batch %s; its lease runs out", batch_id)


async def _give_up(session: AsyncSession, batch: Batch, why: str) -> None:
    """Fail a batch whose runs keep failing: its unfinished requests end with internal_error.
    Only their ids are read, never their bodies (one of those may be why the runs die)."""
    error = {"code": "internal_error", "message": f"the batch run failed {batch.run_failures} times"}
    ids = (
        await session.scalars(
            select(Request.id).where(Request.batch_id == batch.id, Request.status == RequestStatus.PROCESSING)
        )
    ).all()
    for start in range(0, len(ids), GIVE_UP_CHUNK):
        chunk = ids[start : start + GIVE_UP_CHUNK]
        await results.record(session, batch.id, [LineResult(rid, "", None, error) for rid in chunk])
    batch.error = {**error, "last_error": why}
    states.move_batch(session, batch, BatchStatus.FAILED, f"run failed {batch.run_failures} times: {why}")
    leases.release(batch)
