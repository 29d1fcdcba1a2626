"""RabbitMQ connections: connect in the background, reconnect with backoff, report their state.

Intake and delivery use separate connections, because RabbitMQ throttles a connection that
publishes too fast (flow control) and a consumer sharing it would stall with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aio_pika.robust_connection import RobustConnection
from yarl import URL

from app.ground.clock import utcnow
from app.ground.config import Settings
from app.ground.identity import instance_name

log = logging.getLogger(__name__)

State = Literal["connecting", "connected", "disconnected", "closed"]
FIRST_RETRY_SECONDS = 1.0


class BackoffConnection(RobustConnection):
    """aio-pika's robust connection with a reconnect pause that grows with the outage.

    aio-pika waits a fixed `reconnect_interval` between attempts; here the pause is half the
    outage so far (so attempts thin out geometrically), between 1 s and the configured cap.
    """

    down_since: float | None = None
    max_interval: float = 30.0

    @property
    def reconnect_interval(self) -> float:
        return (
            FIRST_RETRY_SECONDS
            if self.down_since is None
            else reconnect_pause(self.down_since, self.max_interval)
        )

    @reconnect_interval.setter
    def reconnect_interval(self, _value: float) -> None:
        pass  # aio-pika sets its fixed interval here; the property above replaces it


def reconnect_pause(down_since: float, cap: float) -> float:
    """Half the outage so far (monotonic seconds), between FIRST_RETRY_SECONDS and cap."""
    return min(cap, max(FIRST_RETRY_SECONDS, (time.monotonic() - down_since) / 2))


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    state: State
    since: datetime
    last_error: str | None


class BrokerConnection:
    """One named robust connection to RABBITMQ_URL, opened in the background."""

    def __init__(self, url: str, name: str, max_backoff_seconds: float) -> None:
        self.url = url
        self.name = name
        self.max_backoff_seconds = max_backoff_seconds
        self.connection: AbstractRobustConnection | None = None
        self.state: State = "connecting"
        self.since = utcnow()
        self.last_error: str | None = None
        self.on_connected: list[Callable[[], Any]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down_since = time.monotonic()

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def status(self) -> ConnectionStatus:
        return ConnectionStatus(self.state, self.since, self.last_error)

    def start(self) -> None:
        """Begin connecting; the app starts whether or not the broker is up."""
        self._task = asyncio.create_task(self._connect_until_up(), name=f"rabbitmq-{self.name}")

    async def wait_connected(self) -> AbstractRobustConnection:
        """Wait for the first successful connection (later outages are aio-pika's to recover)."""
        await self._ready.wait()
        assert self.connection is not None
        return self.connection

    async def channel(self, **options: Any) -> AbstractRobustChannel:
        """A robust channel: aio-pika reopens it, with its queues and consumers, after a reconnect."""
        connection = await self.wait_connected()
        return await connection.channel(**options)

    async def close(self) -> None:
        self._set("closed")  # first, so the close below is not reported as a lost connection
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.connection is not None:
            await self.connection.close()

    async def _connect_until_up(self) -> None:
        # aio-pika's own reconnect loop only takes over after a first success, so the first
        # connection is retried here, with the same backoff and the error kept for /health.
        while True:
            try:
                connection = await aio_pika.connect_robust(
                    self.url,
                    connection_class=BackoffConnection,
                    client_properties={"connection_name": self.name},
                    timeout=10,
                )
                break
            except Exception as exc:  # every failure to connect is retried; the state shows it
                self.last_error = _describe(exc)
                delay = reconnect_pause(self._down_since, self.max_backoff_seconds)
                log.warning("RabbitMQ %s: cannot connect (%s); retrying in %.0f s", self.name, exc, delay)
                await asyncio.sleep(delay)
        assert isinstance(connection, BackoffConnection)
        connection.max_interval = self.max_backoff_seconds
        connection.close_callbacks.add(self._lost)
        connection.reconnect_callbacks.add(self._reconnected)
        self.connection = connection
        self._up()
        self._ready.set()

    def _up(self) -> None:
        if isinstance(self.connection, BackoffConnection):
            self.connection.down_since = None
        self._set("connected")
        log.info("RabbitMQ %s: connected to %s", self.name, safe_host(self.url))
        for callback in self.on_connected:
            callback()

    def _lost(self, _connection: Any, exc: BaseException | None = None) -> None:
        if self.state == "closed":
            return
        if isinstance(self.connection, BackoffConnection) and self.connection.down_since is None:
            self.connection.down_since = time.monotonic()
        if exc is not None:
            self.last_error = _describe(exc)
        self._set("disconnected")
        log.warning("RabbitMQ %s: connection lost (%s); reconnecting", self.name, self.last_error)

    def _reconnected(self, _connection: Any) -> None:
        self._up()

    def _set(self, state: State) -> None:
        if state != self.state:
            self.state, self.since = state, utcnow()


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """What /health and the UI show about RabbitMQ."""

    state: State
    host: str
    intake_queue: str | None
    consuming: bool
    last_error: str | None
    connections: dict[str, ConnectionStatus]


class Broker:
    """The RabbitMQ side of a process: an intake connection and a publishing connection."""

    def __init__(self, settings: Settings) -> None:
        assert settings.rabbitmq_url, "Broker needs RABBITMQ_URL"
        self.host = safe_host(settings.rabbitmq_url)
        self.intake_queue = settings.rabbitmq_input_queue or None
        label = f"batchgate {_process_label()}"
        cap = settings.rabbitmq_reconnect_max_seconds
        self.intake = BrokerConnection(settings.rabbitmq_url, f"{label} intake", cap)
        self.publish = BrokerConnection(settings.rabbitmq_url, f"{label} publish", cap)

    def start(self) -> None:
        if self.intake_queue:
            self.intake.start()
        self.publish.start()

    async def close(self) -> None:
        await asyncio.gather(self.intake.close(), self.publish.close())

    def connections(self) -> dict[str, BrokerConnection]:
        return (
            {"intake": self.intake, "publish": self.publish}
            if self.intake_queue
            else {"publish": self.publish}
        )

    def status(self, consuming: bool = False, intake_error: str | None = None) -> BrokerStatus:
        """The worst state of the connections, with the most recent error."""
        connections = {role: c.status() for role, c in self.connections().items()}
        states = {c.state for c in connections.values()}
        state: State = next((s for s in ("disconnected", "connecting", "closed") if s in states), "connected")
        errors = sorted(((c.since, c.last_error) for c in connections.values() if c.last_error), reverse=True)
        last_error = intake_error or (errors[0][1] if errors else None)
        return BrokerStatus(state, self.host, self.intake_queue, consuming, last_error, connections)


def rabbitmq_status(broker: Broker | None, consumer: Any) -> BrokerStatus | None:
    """The broker's status as /health and the dashboard show it (None when RabbitMQ is off).

    `consumer` is the intake consumer, if one runs (it has `consuming` and `error`).
    """
    if broker is None:
        return None
    return broker.status(
        consuming=bool(consumer and consumer.consuming), intake_error=consumer.error if consumer else None
    )


def safe_host(url: str) -> str:
    """host:port/vhost of an AMQP URL, without credentials."""
    parsed = URL(url)
    vhost = parsed.path[1:] if len(parsed.path) > 1 else "/"
    return f"{parsed.host}:{parsed.port or 5672} vhost {vhost}"


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:500]


def _process_label() -> str:
    # Unique per Broker, so an operator (or a test) can tell the connections of two processes apart.
    return instance_name()
