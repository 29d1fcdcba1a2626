"""RabbitMQ channel: publish the result as a persistent message, confirmed by the broker.

Targets are {"type": "rabbitmq", "rabbitmq_queue": q} (the default exchange, routing key q) or
{"type": "rabbitmq", "rabbitmq_exchange": x, "routing_key": k}. Every publish is `mandatory`, so
a message no queue would take comes back as a failed attempt instead of vanishing. A target
outside RABBITMQ_DELIVERY_QUEUES / RABBITMQ_DELIVERY_EXCHANGES fails for good before anything is
declared, so only allowed queues are ever created (with RABBITMQ_DECLARE_QUEUES).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustChannel
from aiormq.exceptions import (
    AMQPError,
    ChannelAccessRefused,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)

from app.channels.base import Message, SendResult
from app.ground.config import Settings
from app.ground.statuses import Outcome
from app.net.broker import BrokerConnection
from app.net.destinations import rabbitmq_refusal


class RabbitMQChannel:
    """Sends deliveries whose target type is "rabbitmq", many at once over one confirming channel."""

    name = "rabbitmq"

    def __init__(self, settings: Settings, connection: BrokerConnection) -> None:
        self.connection = connection
        self._settings = settings
        self.timeout_seconds = settings.rabbitmq_publish_timeout_seconds
        self._declare = settings.rabbitmq_declare_queues
        self._channel: AbstractRobustChannel | None = None
        self._opening = asyncio.Lock()
        # Checks open short-lived channels; one at a time. A first send to a new queue used to
        # probe it from every send in flight at once, and opening that many channels, some closed
        # by the broker (a passive declare of a missing queue), once got the connection closed
        # with "CHANNEL_ERROR - second 'channel.open' seen".
        self._checking = asyncio.Lock()
        self._checked_exchanges: set[str] = set()
        self._checked_queues: set[str] = set()

    @property
    def available(self) -> bool:
        """Deliveries wait (unclaimed, no attempt spent) while the broker is unreachable."""
        return self.connection.connected

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def send(self, message: Message) -> SendResult:
        target = message.target
        queue, exchange_name = target.get("rabbitmq_queue"), target.get("rabbitmq_exchange")
        routing_key = queue or target.get("routing_key", "")
        where = f"queue {queue!r}" if queue else f"exchange {exchange_name!r}"
        # Checked at intake; again here, as the allow-lists may have changed since. Before any
        # declare: a queue outside the list is never created.
        if refusal := rabbitmq_refusal(self._settings, queue, exchange_name):
            return SendResult(Outcome.PERMANENT_FAILURE, error=f"refused: {refusal}")
        try:
            channel = await self._publishing_channel()
            if queue:
                await self._check_queue(queue)
                exchange = channel.default_exchange
            elif exchange_name:
                exchange = await self._exchange(channel, exchange_name)
            else:  # intake lets no such target in
                return SendResult(
                    Outcome.PERMANENT_FAILURE, error="the target names no queue and no exchange"
                )
            await exchange.publish(
                _amqp_message(message), routing_key, mandatory=True, timeout=self.timeout_seconds
            )
        except PublishError:
            self._forget(target)  # the queue may have been deleted: check it again next time
            return SendResult(
                Outcome.RETRYABLE_FAILURE,
                error=f"unroutable: no queue is bound to {where} for routing key {routing_key!r}",
            )
        except DeliveryError as exc:
            return SendResult(Outcome.RETRYABLE_FAILURE, error=f"broker refused the message (nack): {exc}")
        except ChannelNotFoundEntity:
            self._forget(target)
            # Retryable: the queue's owner may create it yet; the attempts run out otherwise.
            why = " (RABBITMQ_DECLARE_QUEUES=false: Batchgate does not create it)" if queue else ""
            return SendResult(Outcome.RETRYABLE_FAILURE, error=f"{where} does not exist{why}")
        except ChannelAccessRefused as exc:
            return SendResult(Outcome.PERMANENT_FAILURE, error=f"access to {where} refused: {exc}")
        except TimeoutError:
            return SendResult(
                Outcome.RETRYABLE_FAILURE, error=f"no publisher confirm within {self.timeout_seconds} s"
            )
        except (AMQPError, ChannelInvalidStateError, ConnectionError, RuntimeError) as exc:
            return SendResult(
                Outcome.RETRYABLE_FAILURE, error=f"broker connection: {type(exc).__name__}: {exc}"
            )
        return SendResult(Outcome.SUCCESS, response_excerpt=f"confirmed by the broker ({where})")

    async def _publishing_channel(self) -> AbstractRobustChannel:
        async with self._opening:
            if self._channel is None or self._channel.is_closed:
                # One channel carries every publish: confirms are pipelined, so sends overlap
                # instead of waiting for each other.
                self._channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
            return self._channel

    async def _check_queue(self, queue: str) -> None:
        """On first use of a queue: declare it durable, or only check it exists. Only queues
        the allow-list (RABBITMQ_DELIVERY_QUEUES) admits get here, so only those are declared."""
        if queue in self._checked_queues:
            return
        async with self._checking:
            if queue in self._checked_queues:
                return  # checked by a send that held the lock before this one
            # A failed passive declare closes its channel, so checks never use the publishing one.
            async with await self.connection.channel() as probe:
                try:
                    await probe.declare_queue(queue, passive=True)
                except ChannelNotFoundEntity:
                    if not self._declare:
                        raise
                    async with await self.connection.channel() as declarer:
                        await declarer.declare_queue(queue, durable=True)
            self._checked_queues.add(queue)

    async def _exchange(self, channel: AbstractRobustChannel, name: str) -> AbstractExchange:
        # Exchanges are never declared (their type is the owner's choice), only checked: a
        # publish to a missing exchange would close the shared publishing channel.
        if name not in self._checked_exchanges:
            async with self._checking:
                if name not in self._checked_exchanges:
                    async with await self.connection.channel() as probe:
                        await probe.get_exchange(name, ensure=True)
                    self._checked_exchanges.add(name)
        return await channel.get_exchange(name, ensure=False)

    def _forget(self, target: dict[str, Any]) -> None:
        self._checked_queues.discard(target.get("rabbitmq_queue") or "")
        self._checked_exchanges.discard(target.get("rabbitmq_exchange") or "")


def _amqp_message(message: Message) -> aio_pika.Message:
    return aio_pika.Message(
        message.body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.delivery_id,
        timestamp=datetime.now(UTC),
        app_id="batchgate",
        type="batchgate.result",
        headers={"x-batchgate-custom-id": message.custom_id, "x-batchgate-attempt": message.attempt},
    )
