"""The driver of the pipeline: APScheduler runs each step on a tick, and new work wakes a step at once.

The database is the queue; this module only decides when each step looks at it. A step that
finds a full chunk of work runs again straight away, and a wake that arrives while a step is
running makes it run once more, so no wake is lost and latency is not a multiple of the tick.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from app.backends.base import BackendStatus, BatchAPI, LineRunner, MessageBatchAPI
from app.channels.base import Channel
from app.core import announcements, batching, deadlines, retention
from app.core.dispatch import Dispatcher
from app.core.dropin import finish
from app.core.recoveries import step as recoveries
from app.core.rules import leases
from app.core.rules.effective import EffectiveSettings
from app.core.runs import local as local_runs
from app.core.runs.anthropic.runner import AnthropicRunner
from app.core.runs.openai import runner as openai_runs
from app.db.models import Batch, Delivery
from app.db.session import Database
from app.ground.config import Settings
from app.ground.identity import instance_name
from app.ground.steps import Step

log = logging.getLogger(__name__)

# Retention is slow housekeeping: old rows wait minutes more at no cost, and a pass that finds
# nothing still reads the ended batches.
PURGE_INTERVAL_SECONDS = 600.0


class ScheduledStep:
    """One pipeline step run by the scheduler: returns True when more work is likely waiting."""

    def __init__(self, name: Step, run_once: Callable[[], Awaitable[bool]]) -> None:
        self.name = name
        self.run_once = run_once
        self.running = False
        self.woken = False
        self.scheduler: AsyncIOScheduler | None = None
        self.failing: str | None = None  # why its last run failed; None when it worked

    async def run(self) -> None:
        self.running = True
        try:
            while True:
                self.woken = False
                try:
                    more = await self.run_once()
                except Exception as exc:
                    self._failed(exc)
                    return
                if self.failing is not None:
                    log.info("step %s works again", self.name)
                    self.failing = None
                if not (more or self.woken):
                    return
        finally:
            self.running = False

    def _failed(self, exc: Exception) -> None:
        """Log a failure with its traceback once, not every tick while it lasts (a full disk
        fails every step every second): again only when the failure changes."""
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if why != self.failing:
            log.exception("step %s failed; it runs again on every tick until it works", self.name)
        else:
            log.debug("step %s failed again: %s", self.name, why)
        self.failing = why

    def wake(self) -> None:
        if self.running:
            self.woken = True
        elif self.scheduler is not None and self.scheduler.running:
            # A fresh context: a wake from inside a batch's run must not lend the step that
            # batch's log ids (the scheduler starts the step in the context it was woken from).
            contextvars.Context().run(self.scheduler.modify_job, self.name, next_run_time=datetime.now(UTC))


class Worker:
    """Owns the scheduler and the pipeline steps; the app factory hands it the adapters."""

    def __init__(
        self,
        db: Database,
        effective: EffectiveSettings,
        line_runners: Sequence[LineRunner],
        batch_apis: Sequence[BatchAPI],
        channels: Mapping[str, Channel],
        message_batch_apis: Sequence[MessageBatchAPI] = (),
    ) -> None:
        self.db = db
        self.effective = effective
        self.owner = instance_name()
        self.channels = dict(channels)
        # Each backend's last probe (monotonic time, answer), for driver.status.
        self.probed: dict[str, tuple[float, BackendStatus]] = {}
        # One runner per backend: each claims only its own backend's batches.
        self.line_runners = [
            local_runs.LocalRunner(db, effective, backend, self.owner, on_results=self.wake_deliver)
            for backend in line_runners
        ]
        self.batch_runners = [
            openai_runs.OpenAIRunner(db, effective, api, self.owner, on_results=self.wake_deliver)
            for api in batch_apis
        ]
        self.message_batch_runners = [
            AnthropicRunner(db, effective, api, self.owner, on_results=self.wake_deliver)
            for api in message_batch_apis
        ]
        self.dispatcher = Dispatcher(
            db, self.owner, lambda: self.effective.current, self.channels, self.wake_deliver, self._wake_at
        )
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.steps = {
            step.name: step
            for step in (
                ScheduledStep(Step.FORM, self._form),
                ScheduledStep(Step.SUBMIT, self._submit),
                ScheduledStep(Step.RUN, self._run),
                ScheduledStep(Step.POLL, self._poll),
                ScheduledStep(Step.DELIVER, self._deliver),
                ScheduledStep(Step.FINISH, self._finish),
                ScheduledStep(Step.RECOVER, self._recover),
                ScheduledStep(Step.PURGE, self._purge),
            )
        }
        self._timers: list[asyncio.TimerHandle] = []

    @property
    def settings(self) -> Settings:
        """The settings in force (the environment's plus the operator's overrides)."""
        return self.effective.current

    async def start(self) -> None:
        tick = (await self.effective.refresh()).tick_seconds
        # The batcher runs more often than the other steps: age-based closing is its only trigger.
        intervals = {Step.FORM: min(tick, 0.25), Step.PURGE: max(tick, PURGE_INTERVAL_SECONDS)}
        for step in self.steps.values():
            step.scheduler = self.scheduler
            self.scheduler.add_job(
                step.run,
                "interval",
                seconds=intervals.get(step.name, tick),
                id=step.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=datetime.now(UTC),
            )
        # A tick that finds its step still running is skipped on purpose; that is not a warning.
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
        self.scheduler.start()

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for runner in self.line_runners:
            await runner.stop()
        await self.dispatcher.stop()
        try:
            async with self.db.transaction() as session:
                for model in (Batch, Delivery):
                    await leases.release_all(session, model, self.owner)
        except Exception:
            log.exception("could not release leases; they run out after LEASE_SECONDS")

    def wake(self, step: Step) -> None:
        """Run `step` now (or once more, when it is running) instead of on its next tick."""
        self.steps[step].wake()

    @property
    def remote_runners(self) -> list[openai_runs.OpenAIRunner | AnthropicRunner]:
        """The runners of every batch API backend (OpenAI's and Anthropic's), in backend order."""
        return [*self.batch_runners, *self.message_batch_runners]

    @property
    def batch_api_blocks(self) -> dict[str, str]:
        """Why each stopped batch API's submission is stopped (a refused key), by backend name."""
        return {r.backend.name: r.gate.reason for r in self.remote_runners if r.gate.reason is not None}

    def wake_deliver(self) -> None:
        self.wake(Step.DELIVER)

    async def _form(self) -> bool:
        settings = await self.effective.fresh()
        if await batching.form_due_batches(self.db, settings):
            self.wake(Step.SUBMIT)
        # Deadlines are checked as often as batches form: a request past its complete_by ends now.
        if overdue := await deadlines.fail_overdue(self.db):
            self.wake(Step.DELIVER)
        return overdue == deadlines.CHUNK

    async def _submit(self) -> bool:
        submitted = any([await runner.submit() for runner in self.remote_runners])
        if submitted:
            self.wake(Step.POLL)
        if await local_runs.submit_ready(self.db, [runner.backend.name for runner in self.line_runners]):
            self.wake(Step.RUN)
            return True
        return submitted

    async def _poll(self) -> bool:
        return any([await runner.poll() for runner in self.remote_runners])

    async def _run(self) -> bool:
        for runner in self.line_runners:
            await runner.claim_and_start()
        return False

    async def _deliver(self) -> bool:
        await self.dispatcher.deliver_due()
        return False

    async def _finish(self) -> bool:
        settings = self.settings
        more = await finish.step(self.db, settings.data_dir, self.owner, settings.lease_seconds)
        # Ends are announced here, once per tick, not in the delivery loop: a drop-in batch's end
        # counts once its files are written, which this same step does.
        url = settings.batch_events_webhook_url
        if await announcements.queue_due(self.db, str(url) if url else None):
            self.wake(Step.DELIVER)
        return more

    async def _recover(self) -> bool:
        chunk = await recoveries.step(self.db, self.owner, self.settings.lease_seconds)
        if chunk.queued:
            self.wake_deliver()
        return chunk.more

    async def _purge(self) -> bool:
        settings = self.settings
        remote = (
            {r.backend.name: r.backend for r in self.batch_runners} if settings.openai_delete_files else {}
        )
        return await retention.step(self.db, settings.data_dir, settings.retention_days, remote)

    def _wake_at(self, when: datetime) -> None:
        """Wake the deliverer at `when` when that comes before the next tick."""
        delay = (when - datetime.now(UTC)).total_seconds()
        if delay <= 0:
            # Now, not through a timer: uvloop's call_later(0) gives a plain Handle, which has
            # no when() to be sorted out by below.
            self.wake_deliver()
        elif delay < self.settings.tick_seconds:
            loop = asyncio.get_running_loop()
            self._timers = [t for t in self._timers if not t.cancelled() and t.when() > loop.time()]
            self._timers.append(loop.call_later(delay, self.wake_deliver))
