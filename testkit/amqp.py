"""RabbitMQ as a user of the gateway sees it: unique queues that are deleted afterwards,
publishing, draining, and closing the gateway's connections from the broker side."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def rabbitmq_reachable() -> bool:
    try:
        connection = await aio_pika.connect(RABBITMQ_URL, timeout=3)
    except Exception:
        return False
    await connection.close()
    return True


class Amqp:
    """A plain AMQP client, as a user of the gateway would have."""

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        self.connection = connection
        self.channel = channel
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def name(self, label: str) -> str:
        """A unique queue name, deleted (with its .dlq) when the test ends."""
        name = f"bg_test_{label}_{uuid.uuid4().hex[:10]}"
        self.queues += [name, f"{name}.dlq"]
        return name

    async def exchange(self, label: str, kind: str = "direct") -> str:
        name = f"bg_test_{label}_{uuid.uuid4().hex[:10]}"
        self.exchanges.append(name)
        await self.channel.declare_exchange(name, kind, durable=False, auto_delete=False)
        return name

    async def publish(self, queue: str, body: bytes | dict[str, Any], **properties: Any) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self.channel.default_exchange.publish(
            aio_pika.Message(raw, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties), queue
        )

    async def count(self, queue: str) -> int:
        """Ready messages in a queue (unacked ones are not counted)."""
        declared = await self.channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0

    async def drain(self, queue: str, until: int, timeout: float = 60.0) -> list[AbstractIncomingMessage]:  # noqa: ASYNC109
        """Consume (and ack) messages until `until` distinct message ids arrived; returns all of them."""
        declared = await self.channel.declare_queue(queue, durable=True)
        received: list[AbstractIncomingMessage] = []
        ids: set[str | None] = set()
        async with asyncio.timeout(timeout):
            async with declared.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    received.append(message)
                    ids.add(message.message_id)
                    if len(ids) >= until:
                        break
        return received

    async def get_all(self, queue: str) -> list[AbstractIncomingMessage]:
        """Every message ready in a queue right now, acked."""
        declared = await self.channel.declare_queue(queue, passive=True)
        found = []
        while (message := await declared.get(fail=False)) is not None:
            await message.ack()
            found.append(message)
        return found


@asynccontextmanager
async def amqp_client() -> AsyncIterator[Amqp]:
    connection = await aio_pika.connect(RABBITMQ_URL, timeout=5)
    client = Amqp(connection, await connection.channel())
    try:
        yield client
    finally:
        # A failed passive declare closes a channel, so clean up on a fresh one.
        cleanup = await connection.channel()
        for queue in client.queues:
            await cleanup.queue_delete(queue)
        for exchange in client.exchanges:
            await cleanup.exchange_delete(exchange)
        await connection.close()


def rabbitmqctl_available() -> bool:
    return shutil.which("rabbitmqctl") is not None


async def close_connections(name_fragment: str) -> int:
    """Force-close, from the broker's side, every connection whose name contains the fragment."""
    listing = await _run("rabbitmqctl", "-q", "list_connections", "pid", "client_properties")
    pids = [line.split("\t", 1)[0] for line in listing.splitlines()[1:] if name_fragment in line]
    for pid in pids:
        await _run("rabbitmqctl", "-q", "close_connection", pid, "batchgate test: forced close")
    return len(pids)


async def _run(*command: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {err.decode()}")
    return out.decode()
