"""The local backend end to end, against a direct client making the same calls at the same concurrency.

    .venv/bin/python -m bench.local_e2e [--db sqlite|postgres] [--requests 20000] [--concurrency 64]
        [--latency 0.05] [--rounds 2]

Gateway: `batchgate serve` in its own process (role all), LOCAL_CONCURRENCY=C, LOCAL_BASE_URL at
an inference stand-in served in this process that answers each call after `latency` seconds;
batches of at most 1,000 requests, closing after 0.2 s. The N requests (delivery `none`) arrive
through POST /api/requests/bulk, 1,000 per call. Measured from the first submit until the database
holds N succeeded requests (polled every 20 ms). Limit, in the same round: the same N chat
completions sent straight to the same stand-in by C httpx clients (one per slot, which is faster
than one shared client) from a process of their own (bench.direct_client), as the gateway's are.
`make bench` runs it twice: at 50 ms (goal 0.85: C calls kept in flight) and at 0 ms (goal 0.5:
the gateway's own cost per request, intake, batch, run, store, deliver, against a bare call).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from sqlalchemy import text

from app.db.session import Database
from bench import direct_client, summary
from bench.common import fresh_database, gateway, options, raw_database
from bench.http_intake import usage
from testkit import NO_DELIVERY, chat, request_payload, wait_until
from testkit.standins.inference import InferenceStandin
from testkit.standins.serve import serve

CHUNK = 1000


def body(i: int) -> dict[str, object]:
    return request_payload(f"local-{i}", NO_DELIVERY, messages=chat(f"say hi to {i}"))


async def direct_rate(n: int, c: int, latency: float, timeout: float) -> float:  # noqa: ASYNC109
    """N chat completions straight to a stand-in from another process (bench.direct_client), C at
    a time; calls per second."""
    standin = InferenceStandin()
    standin.delay_seconds = latency
    async with serve(standin) as url:
        return n / await direct_client.seconds("chat", url, n, c, timeout=timeout)


async def succeeded(db: Database) -> int:
    query = text("SELECT count(*) FROM requests WHERE status = 'succeeded'")
    async with db.engine.connect() as connection:
        return int(await connection.scalar(query))


async def wait_succeeded(url: str, n: int, timeout: float) -> None:  # noqa: ASYNC109
    """Until the database holds N succeeded requests, polled every 20 ms."""
    done, db = 0, raw_database(url)

    async def all_done() -> bool:
        nonlocal done
        done = await succeeded(db)
        return done >= n

    try:
        await wait_until(
            all_done, timeout=timeout, interval=0.02, what=lambda: f"{n} requests succeeded ({done} so far)"
        )
    finally:
        await db.dispose()


async def gateway_rate(kind: str, n: int, c: int, latency: float, timeout: float) -> float:  # noqa: ASYNC109
    """N requests through the app, from the first submit until all have succeeded; per second."""
    standin = InferenceStandin()
    standin.delay_seconds = latency
    async with (
        fresh_database(kind) as url,
        serve(standin) as standin_url,
        gateway(
            url,
            standin_url,
            LOCAL_CONCURRENCY=str(c),
            BATCH_MAX_REQUESTS=str(CHUNK),
            LOCAL_BATCH_MAX_AGE_SECONDS="0.2",
            TICK_SECONDS="0.2",
            LEASE_SECONDS="60",
        ) as (process, client),
    ):
        cpu_before = sum(usage(process.pid)[:2])
        start = time.monotonic()
        for first in range(0, n, CHUNK):
            items = [body(i) for i in range(first, min(first + CHUNK, n))]
            answer = await client.post("/api/requests/bulk", json=items)
            if answer.status_code not in (200, 202):
                raise RuntimeError(f"bulk submit: {answer.status_code} {answer.text[:300]}")
        await wait_succeeded(url, n, timeout)
        seconds = time.monotonic() - start
        cpu = sum(usage(process.pid)[:2]) - cpu_before
        print(f"  gateway: {seconds:.1f} s, app process CPU {cpu:.1f} s ({cpu / seconds:.0%} of a core)")
        return n / seconds


async def main(args: argparse.Namespace) -> None:
    direct: list[float] = []
    through: list[float] = []
    for r in range(args.rounds):
        direct.append(await direct_rate(args.requests, args.concurrency, args.latency, args.timeout))
        through.append(
            await gateway_rate(args.db, args.requests, args.concurrency, args.latency, args.timeout)
        )
        print(
            f"round {r + 1}/{args.rounds}: direct {direct[-1]:,.0f}/s, gateway {through[-1]:,.0f}/s",
            flush=True,
        )
    print(
        f"bench.local_e2e  db={args.db}  requests={args.requests}  concurrency={args.concurrency}  "
        f"latency={args.latency * 1000:g} ms  rounds={args.rounds}"
    )
    summary.report(
        summary.Outcome(
            path=f"Local backend end to end, {args.requests:,} requests, "
            f"{args.latency * 1000:g} ms stand-in, concurrency {args.concurrency} ({args.db})",
            measured=f"gateway {summary.rates(through)} vs direct client {summary.rates(direct)}",
            figures=summary.ratios(through, direct),
            # At 0 ms the ratio is the gateway's own cost per request (intake, batch, run, store,
            # deliver) against a bare call; at 50 ms, keeping C calls in flight.
            goal=0.5 if args.latency == 0 else 0.85,
        )
    )


def parse_args() -> argparse.Namespace:
    parser = options("bench.local_e2e", __doc__, requests=20_000, concurrency=64, rounds=2)
    parser.add_argument("--latency", type=float, default=0.05, help="the stand-in's answer delay, seconds")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
