"""RabbitMQ intake and delivery throughput against the raw broker work, measured in one run.

    .venv/bin/python -m bench.rabbitmq [--db sqlite|postgres] [--requests N] [--concurrency C]

Intake: N messages wait in the intake queue; the app (scheduler off) consumes them into requests.
Limit: a plain aio-pika consumer with the same prefetch and concurrency doing, per message, what
intake cannot avoid: json.loads, one raw INSERT in its own transaction (the same engine), ack.

Delivery: N finished requests with pending RabbitMQ deliveries are written straight into the
database; the app (scheduler on) publishes them. Limit: N confirmed, mandatory, persistent
publishes of the same bodies on one channel at DELIVERY_CONCURRENCY (64) in flight.
Both are timed until the last message is in its place (requests committed, results in the queue).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aio_pika
from sqlalchemy import insert

from app.asgi import create_app
from app.db.models import Delivery, Request
from app.ground.clock import utcnow
from bench import summary
from bench.common import (
    fresh_database,
    hammer,
    parse_args,
    print_table,
    rate,
    ratio,
    raw_database,
    request_row,
)
from testkit import RABBITMQ_URL, fast_settings, request_payload, wait_until
from testkit.standins.serve import serve

PREFETCH, INTAKE_CONCURRENCY, DELIVERY_CONCURRENCY = 64, 16, 64


async def fill(channel: aio_pika.abc.AbstractChannel, queue: str, n: int, prefix: str, target: str) -> None:
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{queue}.dlq"}
    await channel.declare_queue(queue, durable=True, arguments=arguments)
    for i in range(n):
        body = json.dumps(request_payload(f"{prefix}-{i}", {"type": "rabbitmq", "rabbitmq_queue": target}))
        await channel.default_exchange.publish(aio_pika.Message(body.encode()), queue)


async def ready_count(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def intake_rate(url: str, channel: Any, n: int, timeout: float) -> float:  # noqa: ASYNC109
    queue = f"bg_bench_in_{uuid.uuid4().hex[:8]}"
    await fill(channel, queue, n, queue, "unused")
    settings = fast_settings(
        url,
        scheduler_enabled=False,
        rabbitmq_url=RABBITMQ_URL,
        rabbitmq_input_queue=queue,
        rabbitmq_prefetch=PREFETCH,
        rabbitmq_intake_concurrency=INTAKE_CONCURRENCY,
    )
    app = create_app(settings)
    start = time.perf_counter()
    try:
        async with serve(app):

            async def done() -> bool:
                return app.state.pipeline.consumer.counts["accepted"] == n

            await wait_until(done, timeout, interval=0.01, what=f"{n} messages accepted")
            return n / (time.perf_counter() - start)
    finally:
        for name in (queue, f"{queue}.dlq"):
            await channel.queue_delete(name)


async def raw_intake_rate(url: str, connection: Any, n: int, timeout: float) -> float:  # noqa: ASYNC109
    queue = f"bg_bench_raw_{uuid.uuid4().hex[:8]}"
    setup = await connection.channel()
    await fill(setup, queue, n, queue, "unused")
    db = raw_database(url)
    stmt = insert(Request.__table__).returning(Request.__table__.c.id)
    slots = asyncio.Semaphore(INTAKE_CONCURRENCY)
    finished = asyncio.Event()
    acked = 0

    async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal acked
        async with slots:
            row = request_row(json.loads(message.body))
            async with db.engine.begin() as conn:
                await conn.execute(stmt, row)
            await message.ack()
            acked += 1
            if acked == n:
                finished.set()

    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    start = time.perf_counter()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        tag = await declared.consume(handle)
        await asyncio.wait_for(finished.wait(), timeout)
        seconds = time.perf_counter() - start
        await declared.cancel(tag)
        return n / seconds
    finally:
        await channel.close()
        await setup.queue_delete(queue)
        await setup.queue_delete(f"{queue}.dlq")
        await setup.close()
        await db.dispose()


async def delivery_rate(url: str, channel: Any, n: int, timeout: float) -> float:  # noqa: ASYNC109
    target = f"bg_bench_out_{uuid.uuid4().hex[:8]}"
    await channel.declare_queue(target, durable=True)
    db = raw_database(url)
    try:
        rows = []
        for i in range(n):
            row = request_row(
                request_payload(f"{target}-{i}", {"type": "rabbitmq", "rabbitmq_queue": target})
            )
            row["response"] = {"status_code": 200, "body": {"choices": [{"message": {"content": "hi"}}]}}
            row["status"] = "succeeded"
            rows.append(row)
        async with db.engine.begin() as conn:
            ids = (
                await conn.execute(insert(Request.__table__).returning(Request.__table__.c.id), rows)
            ).scalars()
            await conn.execute(
                insert(Delivery.__table__),
                [
                    {
                        "request_id": request_id,
                        "channel": "rabbitmq",
                        "target": {"type": "rabbitmq", "rabbitmq_queue": target},
                        "destination": f"rabbitmq:queue/{target}",
                        "status": "pending",
                        "attempts": 0,
                        "total_attempts": 0,
                        "next_attempt_at": utcnow(),
                        "created_at": utcnow(),
                    }
                    for request_id in ids.all()
                ],
            )
    finally:
        await db.dispose()
    # One queue: its destination may take every slot, as the raw publisher's.
    settings = fast_settings(
        url,
        rabbitmq_url=RABBITMQ_URL,
        rabbitmq_input_queue="",
        delivery_concurrency=DELIVERY_CONCURRENCY,
        delivery_destination_concurrency=DELIVERY_CONCURRENCY,
    )
    try:
        async with serve(create_app(settings)):
            # Timed from the first result in the queue, as bench.delivery times webhooks: the
            # app's start-up (migrations check, broker connection) is not delivery.
            first, seen = 0.0, 0

            async def done() -> bool:
                nonlocal first, seen
                ready = await ready_count(channel, target)
                if ready and not first:
                    first, seen = time.perf_counter(), ready
                return ready >= n

            await wait_until(done, timeout, interval=0.01, what=f"{n} results published")
            return (n - seen) / (time.perf_counter() - first)
    finally:
        await channel.queue_delete(target)


async def raw_publish_rate(connection: Any, n: int, timeout: float) -> float:  # noqa: ASYNC109
    target = f"bg_bench_rawout_{uuid.uuid4().hex[:8]}"
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    await channel.declare_queue(target, durable=True)
    body = json.dumps(
        {"id": "batch_req_1", "custom_id": f"{target}-1", "response": {"status_code": 200}, "error": None}
    ).encode()

    async def publish(_w: int, i: int) -> None:
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=f"dlv_{i}",
            headers={"x-batchgate-custom-id": f"{target}-{i}", "x-batchgate-attempt": 1},
        )
        await channel.default_exchange.publish(message, target, mandatory=True)

    try:
        return n / await hammer(n, DELIVERY_CONCURRENCY, publish, timeout)
    finally:
        await channel.queue_delete(target)
        await channel.close()


async def main(kind: str, n: int, rounds: int, timeout: float) -> None:  # noqa: ASYNC109
    raw_in: list[float] = []
    gateway_in: list[float] = []
    raw_out: list[float] = []
    gateway_out: list[float] = []
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        for _ in range(rounds):
            async with fresh_database(kind) as url:
                raw_in.append(await raw_intake_rate(url, connection, n, timeout))
            async with fresh_database(kind) as url:
                gateway_in.append(await intake_rate(url, channel, n, timeout))
            raw_out.append(await raw_publish_rate(connection, n, timeout))
            async with fresh_database(kind) as url:
                gateway_out.append(await delivery_rate(url, channel, n, timeout))
    print_table(
        f"bench.rabbitmq  db={kind}  messages={n}  rounds={rounds} (medians; ratio range)",
        [
            ("raw intake: consume + INSERT + ack", rate(raw_in)),
            ("gateway intake queue -> requests", rate(gateway_in)),
            ("intake / raw", ratio(gateway_in, raw_in)),
            ("raw publish: confirmed, mandatory", rate(raw_out)),
            ("gateway deliveries -> result queue", rate(gateway_out)),
            ("delivery / raw", ratio(gateway_out, raw_out)),
        ],
    )
    for what, gateway, raw, limit in (
        ("intake", gateway_in, raw_in, "raw consume + INSERT + ack"),
        ("delivery", gateway_out, raw_out, "raw confirmed publish"),
    ):
        summary.report(
            summary.Outcome(
                path=f"RabbitMQ {what} ({kind})",
                measured=f"gateway {summary.rates(gateway, 'msg/s')} "
                f"vs {limit} {summary.rates(raw, 'msg/s')}",
                figures=summary.ratios(gateway, raw),
                goal=0.7,
            )
        )


if __name__ == "__main__":
    args = parse_args("python -m bench.rabbitmq", __doc__.split("\n")[0])
    asyncio.run(main(args.db, args.requests, args.rounds, args.timeout))
