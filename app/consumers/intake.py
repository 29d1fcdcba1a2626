"""The RabbitMQ intake queue: each message is one `POST /api/requests` body, accepted by core.

Every message ends in exactly one of three ways, so none can loop:
- accepted (or already accepted: a duplicate custom_id) → ack, after the row is committed;
- wrong in itself (not JSON, fails validation, too large) → copied to `<queue>.dlq` with the
  reason in `x-batchgate-error`, then acked;
- the database (or the dead-letter publish) is unavailable → nack with requeue after
  RABBITMQ_REQUEUE_DELAY_SECONDS, so nothing is lost while it is down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from aiormq.exceptions import ChannelPreconditionFailed

from app.consumers.acks import Acks
from app.core.intake import accept as intake
from app.core.rules.effective import EffectiveSettings
from app.core.rules.errors import BatchgateError, Problem
from app.db.session import Database, is_unavailable
from app.net.broker import BrokerConnection

log = logging.getLogger(__name__)

HEADER_LIMIT = 4096


class IntakeConsumer:
    """Consumes RABBITMQ_INPUT_QUEUE into requests, RABBITMQ_INTAKE_CONCURRENCY at a time: the
    requests of the messages in hand share one group commit, and their acks one basic.ack."""

    def __init__(
        self, db: Database, effective: EffectiveSettings, connection: BrokerConnection, queue: str
    ) -> None:
        self.db = db
        self.effective = effective
        # Connection and queue parameters are the environment's; intake rules follow the operator's.
        self.settings = settings = effective.base
        self.connection = connection
        self.queue_name = queue
        self.dlq_name = f"{queue}.dlq"
        self._consuming = False
        self.error: str | None = None
        self.counts = {"accepted": 0, "duplicate": 0, "dead_lettered": 0, "requeued": 0}
        self._slots = asyncio.Semaphore(settings.rabbitmq_intake_concurrency)
        self._channel: AbstractRobustChannel | None = None
        self._dlq_channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._setup: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._acks = Acks()

    @property
    def consuming(self) -> bool:
        """Subscribed to the queue over a live connection (aio-pika restores it after a reconnect)."""
        return self._consuming and self.connection.connected

    def start(self) -> None:
        """Start consuming once the broker is reachable (the app does not wait for it)."""
        self._setup = asyncio.create_task(self._set_up(), name="rabbitmq-intake-setup")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop taking messages and let the ones in hand finish; unacked ones return to the queue."""
        if self._setup is not None and not self._setup.done():
            self._setup.cancel()
            await asyncio.gather(self._setup, return_exceptions=True)
        if self._queue is not None and self._tag is not None:
            try:
                await asyncio.wait_for(self._queue.cancel(self._tag), timeout=5)
            except Exception as exc:  # the broker may already be gone; the channel close below suffices
                log.debug("cancelling the intake consumer failed: %s", exc)
        self._consuming = False
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=grace_seconds)
        await self._close_channels()

    async def _close_channels(self) -> None:
        for channel in (self._channel, self._dlq_channel):
            if channel is not None and not channel.is_closed:
                try:
                    await channel.close()
                except Exception as exc:  # already dead with its connection: nothing to release
                    log.debug("closing an intake channel failed: %s", exc)

    async def _set_up(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._declare_and_consume()
                self.error = None
                return
            except Exception as exc:  # e.g. access refused: retried, and shown on /health meanwhile
                self.error = f"{type(exc).__name__}: {exc}"[:500]
                await self._close_channels()  # the next try opens fresh ones
                log.warning("cannot consume %r (%s); retrying in %.0f s", self.queue_name, self.error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.rabbitmq_reconnect_max_seconds)

    async def _declare_and_consume(self) -> None:
        self._channel = await self.connection.channel()
        await self._channel.set_qos(prefetch_count=self.settings.rabbitmq_prefetch)
        # Dead-letter copies are published with confirms: the original is acked only once the
        # broker has the copy.
        self._dlq_channel = await self.connection.channel(publisher_confirms=True)
        await self._channel.declare_queue(self.dlq_name, durable=True)
        self._queue = await self._declare_input_queue()
        self._tag = await self._queue.consume(self._on_message)
        self._consuming = True
        log.info("consuming RabbitMQ queue %r (dead letters: %r)", self.queue_name, self.dlq_name)

    async def _declare_input_queue(self) -> AbstractQueue:
        # Rejections the broker dead-letters by itself (e.g. a message TTL the operator set) go
        # to the same DLQ as ours.
        arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.dlq_name}
        assert self._channel is not None
        try:
            return await self._channel.declare_queue(self.queue_name, durable=True, arguments=arguments)
        except ChannelPreconditionFailed as exc:
            # The queue exists with other arguments (made by someone else): use it as it is. Our
            # own dead-lettering publishes to the DLQ directly, so it does not need them.
            log.warning("queue %r exists with other arguments (%s); using it as it is", self.queue_name, exc)
            await self._channel.close()  # the broker closed it; stop aio-pika from reopening it
            self._channel = await self.connection.channel()
            await self._channel.set_qos(prefetch_count=self.settings.rabbitmq_prefetch)
            return await self._channel.declare_queue(self.queue_name, passive=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        async with self._slots:
            await self._handle(message)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            if len(message.body) > self.settings.api_max_body_bytes:
                await self._dead_letter(
                    message,
                    Problem(
                        "body_too_large",
                        "Message too large",
                        f"The message is {len(message.body)} bytes; API_MAX_BODY_BYTES is "
                        f"{self.settings.api_max_body_bytes}.",
                    ),
                )
                return
            data = intake.parse(message.body)
            await intake.accept(self.db, await self.effective.fresh(), data, origin="rabbitmq")
        except intake.Duplicate as exc:
            if not exc.same:  # another request under a taken custom_id: kept, with the reason
                await self._dead_letter(message, *exc.problems)
                return
            self.counts["duplicate"] += 1  # accepted before (a redelivery, or a resend): done
            await self._acks.ack(message)
        except BatchgateError as exc:
            await self._dead_letter(message, *exc.problems)
        except Exception as exc:
            if is_unavailable(exc):
                log.warning("database unavailable (%s); requeueing message after a pause", exc)
                await self._requeue_later(message)
                return
            log.exception("intake of a RabbitMQ message failed; dead-lettering it")
            await self._dead_letter(
                message, Problem("internal_error", "Internal error", f"{type(exc).__name__}: {exc}")
            )
        else:
            self.counts["accepted"] += 1
            await self._acks.ack(message)

    async def _dead_letter(self, message: AbstractIncomingMessage, *problems: Problem) -> None:
        reason = "; ".join(f"{p.code}{f' at {p.pointer}' if p.pointer else ''}: {p.detail}" for p in problems)
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-batchgate-error": reason[:HEADER_LIMIT],
                "x-batchgate-error-code": problems[0].code if problems else "unknown",
                "x-batchgate-source-queue": self.queue_name,
            }
        )
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            timestamp=message.timestamp,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            assert self._dlq_channel is not None
            await self._dlq_channel.default_exchange.publish(
                copy, self.dlq_name, timeout=self.settings.rabbitmq_publish_timeout_seconds
            )
        except Exception as exc:
            log.warning(
                "could not publish to %r (%s); requeueing the message after a pause", self.dlq_name, exc
            )
            await self._requeue_later(message)
            return
        self.counts["dead_lettered"] += 1
        log.info("dead-lettered a message from %r: %s", self.queue_name, reason[:200])
        await self._acks.ack(message)

    async def _requeue_later(self, message: AbstractIncomingMessage) -> None:
        # Holding the message (and its prefetch slot) for the pause also slows intake down while
        # the database is away, instead of spinning through the queue.
        await asyncio.sleep(self.settings.rabbitmq_requeue_delay_seconds)
        self.counts["requeued"] += 1
        try:
            await message.nack(requeue=True)
        except Exception as exc:  # channel gone: the broker requeues unacked messages by itself
            log.debug("nack failed (%s); the broker requeues the message on channel close", exc)
        else:
            self._acks.settled(message)  # only once nacked: an ack past it must not take it
