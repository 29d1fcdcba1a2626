"""RabbitMQ intake and delivery throughput against the raw durable work, measured in one run.

    .venv/bin/python -m bench.rabbitmq [--db sqlite|postgres] [--requests N] [--rounds R]

Every side runs in a process of its own: the gateway as `batchgate serve` runs it (`python -m app
serve`, its settings in the environment), each limit as `bench.raw_durable`. Both sides are timed
the same way from this process: from the first message in its place to the N-th (polled every
10 ms), and both must have stored all N. `--profile FILE` samples the gateway with py-spy.

Intake: N messages wait in the intake queue; the gateway (SCHEDULER_ENABLED=false: intake alone,
no batching) consumes them into requests, prefetch 64, RABBITMQ_INTAKE_CONCURRENCY 64. Limit: a
consumer with the same prefetch doing the best correct thing: the messages that arrived meanwhile
INSERTed in one transaction (group commit), acked after the commit. Counted: requests rows.

Delivery: N finished requests with pending RabbitMQ deliveries are written straight into the
database; the gateway publishes them (DELIVERY_CONCURRENCY 64, all to one queue). Limit: a raw
outbox over the same rows: claim 64 pending deliveries (FOR UPDATE SKIP LOCKED on PostgreSQL),
publish them at once (persistent, mandatory, confirmed), mark them delivered, commit. Counted:
messages in the result queue, then deliveries marked delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import aio_pika
from sqlalchemy import func, insert, select

from app.db.models import Delivery, Request
from app.ground.clock import utcnow
from bench import pyspy, raw_durable, summary
from bench.common import fresh_database, options, print_table, rate, ratio, raw_database, request_row
from testkit import RABBITMQ_URL, request_payload, wait_until
from testkit.processes import app_env, app_process

PREFETCH, INTAKE_CONCURRENCY, DELIVERY_CONCURRENCY = 64, 64, 64


async def fill(channel: aio_pika.abc.AbstractChannel, queue: str, n: int) -> None:
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{queue}.dlq"}
    await channel.declare_queue(queue, durable=True, arguments=arguments)
    for i in range(n):
        body = json.dumps(request_payload(f"{queue}-{i}", {"type": "rabbitmq", "rabbitmq_queue": "unused"}))
        await channel.default_exchange.publish(aio_pika.Message(body.encode()), queue)


async def ready_count(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def count(url: str, query: Any) -> int:
    db = raw_database(url)
    try:
        async with db.engine.connect() as conn:
            return int(await conn.scalar(query))
    finally:
        await db.dispose()


async def timed(
    n: int,
    counter: Callable[[], Awaitable[int]],
    recorded: Callable[[], Awaitable[bool]],
    worker: Awaitable[Any],
    stop: asyncio.Event,
    timeout: float,  # noqa: ASYNC109
) -> float:
    """Rate from the first item counted to the N-th while `worker` (the side measured) runs;
    then wait until it has `recorded` all N, `stop` it and let it end (a raw side ends itself)."""
    first, seen, now = 0.0, 0, 0

    async def done() -> bool:
        nonlocal first, seen, now
        if task.done() and task.exception():
            raise RuntimeError("the side measured failed") from task.exception()
        now = await counter()
        if now and not first:
            first, seen = time.perf_counter(), now
        return now >= n

    task = asyncio.ensure_future(worker)
    try:
        await wait_until(done, timeout, interval=0.01, what=lambda: f"{n} in place ({now} so far)")
        result = (n - seen) / (time.perf_counter() - first)
        await wait_until(recorded, timeout, interval=0.01, what=f"all {n} recorded")
        stop.set()
        async with asyncio.timeout(timeout):
            await task
        return result
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def serve_until_done(env: dict[str, str], stop: asyncio.Event, profile: str | None) -> None:
    """The gateway in its own process until `stop`; sampled by py-spy into `profile` if given."""
    with tempfile.TemporaryDirectory(prefix="bg_bench_data_") as data_dir:
        env = app_env(env.pop("DATABASE_URL"), "http://127.0.0.1:9", data_dir, **env)
        async with app_process(env) as (process, _), contextlib.AsyncExitStack() as stack:
            if profile:
                await stack.enter_async_context(pyspy.recording(process.pid, Path(profile)))
            await stop.wait()


class Round(NamedTuple):
    """Where and how much one side is measured: database kind, broker channel, N, deadline."""

    kind: str
    channel: Any
    n: int
    timeout: float


async def intake_rate(at: Round, raw: bool, profile: str | None = None) -> float:
    """Messages a second taken from the intake queue into stored requests."""
    kind, channel, n, timeout = at
    queue = f"bg_bench_in_{uuid.uuid4().hex[:8]}"
    await fill(channel, queue, n)
    stop = asyncio.Event()
    stored = select(func.count()).select_from(Request)
    try:
        async with fresh_database(kind) as url:
            if raw:
                worker = raw_durable.run("intake", url, queue, str(n), str(PREFETCH), timeout=timeout)
            else:
                worker = serve_until_done(
                    {
                        "DATABASE_URL": url,
                        "SCHEDULER_ENABLED": "false",
                        "RABBITMQ_URL": RABBITMQ_URL,
                        "RABBITMQ_INPUT_QUEUE": queue,
                        "RABBITMQ_PREFETCH": str(PREFETCH),
                        "RABBITMQ_INTAKE_CONCURRENCY": str(INTAKE_CONCURRENCY),
                    },
                    stop,
                    profile,
                )

            async def all_stored() -> bool:
                return await count(url, stored) >= n

            result = await timed(n, lambda: count(url, stored), all_stored, worker, stop, timeout)
            if (rows := await count(url, stored)) != n:
                raise RuntimeError(f"{'raw' if raw else 'gateway'} intake stored {rows} of {n}")
            return result
    finally:
        for name in (queue, f"{queue}.dlq"):
            await channel.queue_delete(name)


async def seed_deliveries(url: str, target: str, n: int) -> None:
    """N succeeded requests, each with a pending delivery to the queue `target`."""
    rows = []
    for i in range(n):
        row = request_row(request_payload(f"{target}-{i}", {"type": "rabbitmq", "rabbitmq_queue": target}))
        row["response"] = {"status_code": 200, "body": {"choices": [{"message": {"content": "hi"}}]}}
        row["status"] = "succeeded"
        rows.append(row)
    db = raw_database(url)
    try:
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


async def delivery_rate(at: Round, raw: bool, profile: str | None = None) -> float:
    """Pending deliveries a second published to their queue and recorded."""
    kind, channel, n, timeout = at
    target = f"bg_bench_out_{uuid.uuid4().hex[:8]}"
    await channel.declare_queue(target, durable=True)
    stop = asyncio.Event()
    try:
        async with fresh_database(kind) as url:
            await seed_deliveries(url, target, n)
            if raw:
                worker = raw_durable.run("outbox", url, str(n), str(DELIVERY_CONCURRENCY), timeout=timeout)
            else:
                # One queue: its destination may take every slot, as the raw outbox's.
                worker = serve_until_done(
                    {
                        "DATABASE_URL": url,
                        "RABBITMQ_URL": RABBITMQ_URL,
                        "RABBITMQ_INPUT_QUEUE": "",
                        "DELIVERY_CONCURRENCY": str(DELIVERY_CONCURRENCY),
                        "DELIVERY_DESTINATION_CONCURRENCY": str(DELIVERY_CONCURRENCY),
                    },
                    stop,
                    profile,
                )
            delivered = select(func.count()).select_from(Delivery).where(Delivery.status == "delivered")

            async def recorded() -> bool:
                return await count(url, delivered) >= n

            result = await timed(n, lambda: ready_count(channel, target), recorded, worker, stop, timeout)
            if (published := await ready_count(channel, target)) != n:
                raise RuntimeError(f"{'raw' if raw else 'gateway'} outbox published {published} of {n}")
            return result
    finally:
        await channel.queue_delete(target)


async def main(
    kind: str,
    n: int,
    rounds: int,
    timeout: float,  # noqa: ASYNC109
    profile: str | None,
) -> None:
    raw_in: list[float] = []
    gateway_in: list[float] = []
    raw_out: list[float] = []
    gateway_out: list[float] = []
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        at = Round(kind, channel, n, timeout)
        for r in range(rounds):
            raw_in.append(await intake_rate(at, True))
            gateway_in.append(await intake_rate(at, False, profile and f"{profile}.intake"))
            raw_out.append(await delivery_rate(at, True))
            gateway_out.append(await delivery_rate(at, False, profile and f"{profile}.delivery"))
            print(
                f"round {r + 1}/{rounds}: intake raw {raw_in[-1]:,.0f}/s, gateway {gateway_in[-1]:,.0f}/s; "
                f"delivery raw {raw_out[-1]:,.0f}/s, gateway {gateway_out[-1]:,.0f}/s",
                flush=True,
            )
    print_table(
        f"bench.rabbitmq  db={kind}  messages={n}  rounds={rounds} (medians; ratio range)",
        [
            ("raw intake: consume, group-commit INSERT, ack", rate(raw_in)),
            ("gateway intake queue -> requests", rate(gateway_in)),
            ("intake / raw", ratio(gateway_in, raw_in)),
            ("raw outbox: claim, confirmed publish, mark", rate(raw_out)),
            ("gateway deliveries -> result queue", rate(gateway_out)),
            ("delivery / raw", ratio(gateway_out, raw_out)),
        ],
    )
    for what, gateway, raw, limit, goal in (
        ("intake", gateway_in, raw_in, "raw consume + group-commit INSERT + ack", 0.7),
        ("delivery", gateway_out, raw_out, "raw outbox (claim, confirmed publish, mark)", 0.8),
    ):
        summary.report(
            summary.Outcome(
                path=f"RabbitMQ {what} ({kind})",
                measured=f"gateway {summary.rates(gateway, 'msg/s')} "
                f"vs {limit} {summary.rates(raw, 'msg/s')}",
                figures=summary.ratios(gateway, raw),
                goal=goal,
            )
        )


if __name__ == "__main__":
    parser = options("bench.rabbitmq", __doc__, requests=5000, rounds=2)
    parser.add_argument("--profile", help="py-spy the gateway into FILE.intake and FILE.delivery")
    args = parser.parse_args()
    asyncio.run(main(args.db, args.requests, args.rounds, args.timeout, args.profile))
