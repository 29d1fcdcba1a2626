"""Memory end to end: N requests accepted, run on the local backend and delivered, peak RSS sampled.

    .venv/bin/python -m bench.memory [--db sqlite|postgres] [--requests 200000] [--concurrency 64]

`batchgate serve` runs in its own process (role all, LOCAL_CONCURRENCY=C, batches of at most
10,000), against an inference stand-in served in this process that answers at once. The N requests
arrive through POST /api/requests/bulk, 5,000 per call, each to be delivered to one RabbitMQ queue
(publishing is cheaper than a webhook receiver in this process, so the run stays short; both are
one delivery row, one attempt row and one send). The app's resident memory (VmRSS) is read every
half second until the queue holds N results; its peak (VmHWM) is the figure, against 400 MB.
"Flat" is the second half against the first: the highest RSS while the second half of the results
were published, minus the highest before; a leak grows with the count, a cache or a pool does not.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import aio_pika
import httpx

from bench import summary
from bench.common import fresh_database, gateway, options
from bench.dropin import peak_rss_mb, status_mb
from testkit import RABBITMQ_URL, chat, request_payload
from testkit.standins.inference import InferenceStandin
from testkit.standins.serve import serve

CHUNK = 5000
SAMPLE_SECONDS = 0.5


async def submit_all(client: httpx.AsyncClient, n: int, queue: str) -> None:
    target = {"type": "rabbitmq", "rabbitmq_queue": queue}
    for first in range(0, n, CHUNK):
        items = [
            request_payload(f"mem-{i}", target, messages=chat(f"say hi to {i}"))
            for i in range(first, min(first + CHUNK, n))
        ]
        answer = await client.post("/api/requests/bulk", json=items)
        if answer.status_code not in (200, 202):
            raise RuntimeError(f"bulk submit: {answer.status_code} {answer.text[:300]}")


async def run(kind: str, n: int, c: int, timeout: float) -> tuple[float, list[tuple[int, float]], float]:  # noqa: ASYNC109
    """(peak RSS MB, [(results published, RSS MB)] samples, seconds) of one run."""
    queue = f"bg_bench_mem_{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection, fresh_database(kind) as url, serve(InferenceStandin()) as standin_url:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        try:
            async with gateway(
                url,
                standin_url,
                LOCAL_CONCURRENCY=str(c),
                BATCH_MAX_REQUESTS="10000",
                LEASE_SECONDS="60",
                RABBITMQ_URL=RABBITMQ_URL,
                RABBITMQ_INPUT_QUEUE="",
                RABBITMQ_DELIVERY_QUEUES=queue,
            ) as (process, client):
                start = time.monotonic()
                submitting = asyncio.create_task(submit_all(client, n, queue))
                samples: list[tuple[int, float]] = []
                published = 0
                while published < n:
                    if time.monotonic() - start > timeout:
                        raise TimeoutError(f"{published} of {n} results published in {timeout:.0f} s")
                    if submitting.done():
                        submitting.result()  # a failed submit ends the run now
                    await asyncio.sleep(SAMPLE_SECONDS)  # the sampling period, not a wait for a state
                    declared = await channel.declare_queue(queue, passive=True)
                    published = declared.declaration_result.message_count or 0
                    samples.append((published, status_mb(process.pid, "VmRSS")))
                seconds = time.monotonic() - start
                await submitting
                return peak_rss_mb(process.pid), samples, seconds
        finally:
            await channel.queue_delete(queue)


def at_quarters(samples: list[tuple[int, float]], n: int) -> list[tuple[int, float]]:
    """The first sample at or past each quarter of the N results: (results published, RSS MB)."""
    return [next(((d, r) for d, r in samples if d >= n * q // 4), samples[-1]) for q in (1, 2, 3, 4)]


def second_half_growth(samples: list[tuple[int, float]], n: int) -> float:
    first = max((rss for done, rss in samples if done < n // 2), default=0.0)
    second = max((rss for done, rss in samples if done >= n // 2), default=0.0)
    return round(second - first, 1) + 0.0  # never "-0"


async def main(args: argparse.Namespace) -> None:
    n = args.requests
    peak, samples, seconds = await run(args.db, n, args.concurrency, args.timeout)
    print(f"bench.memory  db={args.db}  requests={n:,}  concurrency={args.concurrency}  {seconds:.0f} s")
    quarters = at_quarters(samples, n)
    for done, rss in quarters:
        print(f"  {done:>9,} results published: RSS {rss:.0f} MB")
    growth = second_half_growth(samples, n)
    print(f"  peak RSS (VmHWM) {peak:.0f} MB; second half's highest RSS minus the first's: {growth:+.0f} MB")
    summary.report(
        summary.Outcome(
            path=f"Memory: {n:,} requests end to end ({args.db}), peak RSS",
            measured=f"{seconds:.0f} s; RSS at each quarter of the results: "
            + ", ".join(f"{rss:.0f}" for _, rss in quarters)
            + " MB",
            figures=[peak],
            goal=400,
            unit="MB",
            at_most=True,
        )
    )
    summary.report(
        summary.Outcome(
            path=f"Memory: {n:,} requests end to end ({args.db}), growth over the second half",
            measured="highest RSS while the second half of the results was published, minus the first half's",
            figures=[growth],
            goal=25,
            unit="MB",
            at_most=True,
        )
    )


def parse_args() -> argparse.Namespace:
    return options("bench.memory", __doc__, requests=200_000, concurrency=64, rounds=1).parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
