"""Webhook delivery to 100 healthy destinations with one that hangs, against the same deliveries
with none hanging, in the same run.

    .venv/bin/python -m bench.hanging_destination [--db sqlite|postgres] [--requests 6000]
        [--hanging 300] [--rounds 2]

Each round runs twice, each time on a fresh database filled raw (bench.delivery.fill) and
delivered by `batchgate serve` in its own process (DELIVERY_CONCURRENCY=64, the default
per-destination share, testkit's 3 s webhook timeout and short backoff, so that the hanging
deliveries time out and come back all through the run): N deliveries spread over 100 origins (one
receiver served on 100 ports in this process), and, first in line in one of the two, H deliveries
to an origin that never answers. The healthy rate is taken as bench.delivery takes it (first to N-th
successful POST). Goal (issue 28): with the hanging destination, at least 0.9 of the rate
without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile

from bench import summary
from bench.common import fresh_database, options
from bench.delivery import fill, steady_rate
from testkit import wait_until
from testkit.processes import app_env, app_process
from testkit.standins.asgi import Receive, Scope, Send, lifespan
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.serve import serve, serve_many

DESTINATIONS = 100
CONCURRENCY = 64


async def never_answers(scope: Scope, receive: Receive, send: Send) -> None:
    """A receiver that takes the request and never answers."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    with contextlib.suppress(asyncio.CancelledError):  # at shutdown: nothing left to answer
        await asyncio.Event().wait()


async def healthy_rate(kind: str, n: int, hanging: int, timeout: float) -> float:  # noqa: ASYNC109
    """Healthy deliveries per second, with `hanging` deliveries to a hanging origin first in line."""
    receiver = WebhookReceiver()
    async with (
        fresh_database(kind) as url,
        serve_many(receiver, DESTINATIONS) as origins,
        serve(never_answers, graceful_timeout=0) as hanging_origin,
    ):
        hooks = [hanging_origin + "/hook"] * hanging + [origins[i % DESTINATIONS] + "/hook" for i in range(n)]
        await fill(url, hooks)
        with tempfile.TemporaryDirectory(prefix="bg_bench_data_") as data_dir:
            env = app_env(
                url,
                "http://127.0.0.1:9",
                data_dir,
                DELIVERY_CONCURRENCY=str(CONCURRENCY),
                WEBHOOK_ALLOW_PRIVATE="true",
            )
            async with app_process(env):
                await wait_until(
                    lambda: len({r.custom_id for r in receiver.successes()}) >= n,
                    timeout=timeout,
                    interval=0.05,
                    what=lambda: f"{n} deliveries ({len(receiver.successes())} so far)",
                )
    return steady_rate(receiver, n)


async def main(args: argparse.Namespace) -> None:
    with_hang: list[float] = []
    without: list[float] = []
    for r in range(args.rounds):
        without.append(await healthy_rate(args.db, args.requests, 0, args.timeout))
        with_hang.append(await healthy_rate(args.db, args.requests, args.hanging, args.timeout))
        print(
            f"round {r + 1}/{args.rounds}: healthy {with_hang[-1]:,.0f}/s with a hanging destination, "
            f"{without[-1]:,.0f}/s without",
            flush=True,
        )
    print(
        f"bench.hanging_destination  db={args.db}  deliveries={args.requests} to {DESTINATIONS} origins  "
        f"hanging={args.hanging}  concurrency={CONCURRENCY}"
    )
    summary.report(
        summary.Outcome(
            path=f"Webhook delivery with one hanging destination among {DESTINATIONS} ({args.db})",
            measured=f"with {summary.rates(with_hang)} vs without {summary.rates(without)}",
            figures=summary.ratios(with_hang, without),
            goal=0.9,
        )
    )


def parse_args() -> argparse.Namespace:
    parser = options("bench.hanging_destination", __doc__, requests=6000, rounds=2)
    parser.add_argument("--hanging", type=int, default=300, help="deliveries to the hanging origin")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
