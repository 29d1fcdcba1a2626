"""What /health and the dashboard say about this process: scheduler, backends, broker and the
embedded model. The app factory builds the board from what it started; the board only asks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from app.backends.base import BackendStatus
from app.backends.base import EmbeddedStatus as EmbeddedStatus  # what faces show of the model server
from app.core.driver.worker import Worker
from app.db.session import Database
from app.ground.config import Settings
from app.net.broker import BrokerStatus as BrokerStatus  # what faces show of RabbitMQ

BACKEND_PROBE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    scheduler: str  # running, stopped, or disabled (SCHEDULER_ENABLED=false: this process serves only)
    backends: list[BackendStatus]
    rabbitmq: BrokerStatus | None
    batch_api_blocks: dict[str, str]  # why a batch API's submission is stopped (a refused key), by backend
    embedded: EmbeddedStatus | None = None  # the embedded model server, when this process runs one


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class StatusBoard:
    """Where this process's status comes from: its worker (None when it runs no pipeline) and
    the RabbitMQ and embedded-model status of what the app started (None when off)."""

    worker: Worker | None = None
    rabbitmq: Callable[[], BrokerStatus | None] = field(default=_nothing)
    embedded: Callable[[], EmbeddedStatus | None] = field(default=_nothing)

    async def current(self) -> ProcessStatus:
        """The status of the scheduler, backends, broker connections and embedded model now."""
        if self.worker is None:
            return ProcessStatus("disabled", [], self.rabbitmq(), {}, self.embedded())
        return ProcessStatus(
            "running" if self.worker.scheduler.running else "stopped",
            await backend_statuses(self.worker),
            self.rabbitmq(),
            self.worker.batch_api_blocks,
            self.embedded(),
        )


async def database(db: Database) -> str:
    """ "ok" when the database answers a trivial query now and takes writes (the last write this
    process tried committed), else "error: <why>"."""
    try:
        async with db.transaction() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means the same to /health: this process cannot serve
        return f"error: {type(exc).__name__}"
    if (since := db.writes.failing_since) is not None:
        return f"error: writes refused since {since:%H:%M:%S} UTC ({db.writes.reason})"
    return "ok"


async def backend_statuses(worker: Worker) -> list[BackendStatus]:
    """Each backend's answer to a cheap probe, at most BACKEND_PROBE_SECONDS old, in the order
    the backends are named. A refused batch API key shows as such without another probe: the
    gate rechecks it on its own."""
    statuses = []
    for runner in worker.line_runners:
        statuses.append(runner.backend.outage_status() or await _probe(worker, runner.backend))
    blocks = worker.batch_api_blocks
    for batch_runner in worker.remote_runners:
        api = batch_runner.backend
        if not shown(worker.settings, api.name):
            continue
        if block := blocks.get(api.name):
            statuses.append(BackendStatus(api.name, api.base_url, False, block))
        else:
            statuses.append(await _probe(worker, api))
    return statuses


def shown(settings: Settings, backend: str) -> bool:
    """Whether a batch API's status is worth showing: every backend a backends file names; of
    the shorthand's `openai`, only when requests can be routed to it."""
    return (
        settings.backends_file is not None
        or bool(settings.openai_api_key)
        or settings.default_backend == backend
        or backend in settings.backend_routes
    )


async def _probe(worker: Worker, backend: Any) -> BackendStatus:
    cached = worker.probed.get(backend.name)
    if cached is None or time.monotonic() - cached[0] > BACKEND_PROBE_SECONDS:
        cached = worker.probed[backend.name] = (time.monotonic(), await backend.probe())
    return cached[1]
