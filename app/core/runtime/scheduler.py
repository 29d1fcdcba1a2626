"""The clock: APScheduler runs each pipeline step on a tick, and new work wakes a step at once.

The database is the queue; this module only decides when each step looks at it. A step that
finds a full chunk of work runs again straight away, and a wake that arrives while a step is
running makes it run once more, so no wake is lost and latency is not a multiple of the tick.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from app.backends.base import BackendStatus
from app.backends.local import LocalBackend
from app.backends.openai import OpenAIBackend
from app.broker import Broker
from app.channels.rabbitmq import RabbitMQChannel
from app.channels.webhook import WebhookChannel
from app.config import Settings
from app.core import batching
from app.core import delivery as deliveries
from app.core.rules import leases
from app.core.runs import local as local_runs
from app.core.runs.openai import runner as openai_runs
from app.core.runtime import settings as overrides
from app.db.models import Batch, Delivery
from app.db.session import Database

log = logging.getLogger(__name__)

# Deliveries claimed per round: at most what can be in flight at once, so a claim's lease only
# has to outlast one send timeout and a crashed process's claims are free again soon.
DELIVERY_CHUNK_MAX = 500
SETTINGS_REFRESH_SECONDS = 5.0
BACKEND_PROBE_SECONDS = 10.0


def scheduler_state(worker: Worker | None) -> str:
    """running, stopped, or disabled (SCHEDULER_ENABLED=false: this process serves only)."""
    if worker is None:
        return "disabled"
    return "running" if worker.scheduler.running else "stopped"


class Step:
    """One pipeline step run by the scheduler: returns True when more work is likely waiting."""

    def __init__(self, name: str, run_once: Callable[[], Awaitable[bool]]) -> None:
        self.name = name
        self.run_once = run_once
        self.running = False
        self.woken = False
        self.scheduler: AsyncIOScheduler | None = None

    async def run(self) -> None:
        self.running = True
        try:
            while True:
                self.woken = False
                try:
                    more = await self.run_once()
                except Exception:
                    log.exception("step %s failed; it runs again on the next tick", self.name)
                    return
                if not (more or self.woken):
                    return
        finally:
            self.running = False

    def wake(self) -> None:
        if self.running:
            self.woken = True
        elif self.scheduler is not None and self.scheduler.running:
            self.scheduler.modify_job(self.name, next_run_time=datetime.now(UTC))


class Worker:
    """Owns the scheduler, the backend and channel clients, and the pipeline steps."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        broker: Broker | None = None,
        openai: OpenAIBackend | None = None,
    ) -> None:
        self.db = db
        self.base_settings = settings
        # The settings in force: the environment's plus the operator's overrides (refreshed).
        self.settings = settings
        self._settings_read_at = 0.0
        self._backend_status: dict[str, tuple[float, BackendStatus]] = {}
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.backend = LocalBackend(settings)
        self.channels: dict[str, deliveries.Channel] = {"webhook": WebhookChannel(settings)}
        if broker is not None:
            self.channels["rabbitmq"] = RabbitMQChannel(settings, broker.publish)
            # Deliveries that waited out an outage go as soon as the broker is back.
            broker.publish.on_connected.append(self.wake_deliver)
        self.runner = local_runs.LocalRunner(
            db, settings, self.backend, self.owner, on_results=self.wake_deliver
        )
        self._owns_openai = openai is None  # the app shares its client with the API's delete action
        self.openai = openai or OpenAIBackend(settings)
        self.openai_runner = openai_runs.OpenAIRunner(
            db, lambda: self.settings, self.openai, self.owner, on_results=self.wake_deliver
        )
        self.delivery_chunk = min(settings.delivery_concurrency, DELIVERY_CHUNK_MAX)
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.steps = {
            step.name: step
            for step in (
                Step("form", self._form),
                Step("submit", self._submit),
                Step("run", self._run),
                Step("poll", self._poll),
                Step("deliver", self._deliver),
            )
        }
        self._timers: list[asyncio.TimerHandle] = []

    async def start(self) -> None:
        await self.refresh_settings()
        tick = self.settings.tick_seconds
        # The batcher runs more often than the other steps: age-based closing is its only trigger.
        intervals = {"form": min(tick, 0.25)}
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
        await self.runner.stop()
        try:
            async with self.db.transaction() as session:
                for model in (Batch, Delivery):
                    await leases.release_all(session, model, self.owner)
        except Exception:
            log.exception("could not release leases; they run out after LEASE_SECONDS")
        await self.backend.close()
        if self._owns_openai:
            await self.openai.close()
        for channel in self.channels.values():
            await channel.close()

    def wake(self, name: str) -> None:
        self.steps[name].wake()

    async def refresh_settings(self) -> Settings:
        """Re-read the operator's overrides (an edit here applies at once, elsewhere within
        SETTINGS_REFRESH_SECONDS)."""
        self.settings = await overrides.effective(self.db, self.base_settings)
        self._settings_read_at = time.monotonic()
        return self.settings

    def uses_openai(self) -> bool:
        """Whether requests can be routed to OpenAI here (so its status is worth showing)."""
        settings = self.settings
        return (
            bool(settings.openai_api_key)
            or settings.default_backend == "openai"
            or "openai" in settings.backend_routes
        )

    @property
    def openai_block(self) -> str | None:
        """Why OpenAI submission is stopped (a refused key), or None."""
        return self.openai_runner.gate.reason

    async def backend_statuses(self) -> list[BackendStatus]:
        """Each backend's answer to a cheap probe, at most BACKEND_PROBE_SECONDS old. A refused
        OpenAI key shows as such without another probe: the gate rechecks it on its own."""
        backends: list[LocalBackend | OpenAIBackend] = [self.backend]
        if self.uses_openai():
            backends.append(self.openai)
        statuses = []
        for backend in backends:
            if backend is self.openai and self.openai_block:
                statuses.append(BackendStatus("openai", self.openai.base_url, False, self.openai_block))
                continue
            cached = self._backend_status.get(backend.name)
            if cached is None or time.monotonic() - cached[0] > BACKEND_PROBE_SECONDS:
                cached = self._backend_status[backend.name] = (time.monotonic(), await backend.probe())
            statuses.append(cached[1])
        return statuses

    def wake_deliver(self) -> None:
        self.wake("deliver")

    async def _form(self) -> bool:
        if time.monotonic() - self._settings_read_at >= SETTINGS_REFRESH_SECONDS:
            await self.refresh_settings()
        if await batching.form_due_batches(self.db, self.settings):
            self.wake("submit")
        return False

    async def _submit(self) -> bool:
        submitted = await self.openai_runner.submit()
        if submitted:
            self.wake("poll")
        if await local_runs.submit_ready(self.db):
            self.wake("run")
            return True
        return submitted

    async def _poll(self) -> bool:
        return await self.openai_runner.poll()

    async def _run(self) -> bool:
        await self.runner.claim_and_start()
        return False

    async def _deliver(self) -> bool:
        claimed = await deliveries.claim_due(
            self.db, self.owner, self.settings, self.channels, self.delivery_chunk
        )
        if not claimed:
            return False
        sent = await deliveries.send_all(claimed, self.channels, self.settings.delivery_concurrency)
        earliest = await deliveries.record(self.db, self.owner, self.settings, sent)
        if earliest is not None:
            self._wake_at(earliest)
        return len(claimed) == self.delivery_chunk

    def _wake_at(self, when: datetime) -> None:
        delay = (when - datetime.now(UTC)).total_seconds()
        if delay < self.settings.tick_seconds:
            loop = asyncio.get_running_loop()
            self._timers = [t for t in self._timers if not t.cancelled() and t.when() > loop.time()]
            self._timers.append(loop.call_later(max(delay, 0.0), self.wake_deliver))
