"""Webhook delivery, against raw httpx POSTs of the same bodies to the same receiver at the same concurrency.

    .venv/bin/python -m bench.delivery [--db sqlite|postgres] [--requests 10000] [--concurrency 64]
        [--rounds 3]

Gateway: a fresh database holds N succeeded requests, each with a due webhook delivery to a
receiver served in this process (rows written raw, as the pipeline leaves them). `batchgate serve`
(role all, DELIVERY_CONCURRENCY=C, all of it for the one receiver) then starts in its own process
and delivers them. The rate is taken between the receiver's first and N-th successful POST, so
process start-up is not counted.
Limit, in the same round: N POSTs of bodies as large as the gateway's, from C httpx clients (one
per slot) in a process of their own (bench.direct_client), to a fresh receiver, timed the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Sequence

from sqlalchemy import insert

from app.db.models import Delivery, Request
from app.ground.clock import utcnow
from app.net.destinations import destination_of
from bench import direct_client, summary
from bench.common import fresh_database, options, raw_database
from testkit import wait_until
from testkit.processes import app_env, app_process
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.serve import serve

CHUNK = 2000
RESPONSE = {
    "status_code": 200,
    "body": {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "stand-in",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi " * 40}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52},
    },
}


async def fill(database_url: str, hooks: Sequence[str]) -> None:
    """A succeeded request per hook URL, each with a webhook delivery to it due now (in order)."""
    db = raw_database(database_url)
    now = utcnow()
    try:
        for first in range(0, len(hooks), CHUNK):
            ids = range(first + 1, min(first + CHUNK, len(hooks)) + 1)
            targets = {i: {"type": "webhook", "webhook_url": hooks[i - 1]} for i in ids}
            async with db.engine.begin() as connection:
                await connection.execute(
                    insert(Request.__table__), [_request(i, targets[i], now) for i in ids]
                )
                await connection.execute(
                    insert(Delivery.__table__),
                    [
                        {"request_id": i, "channel": "webhook", "target": targets[i],
                         "destination": destination_of(targets[i]), "status": "pending",
                         "attempts": 0, "total_attempts": 0, "next_attempt_at": now, "created_at": now}
                        for i in ids
                    ],
                )  # fmt: skip
    finally:
        await db.dispose()


def _request(i: int, target: dict[str, str], now: object) -> dict[str, object]:
    return {
        "id": i, "scope": "", "custom_id": f"hook-{i}", "origin": "api", "backend": "local",
        "endpoint": "/v1/chat/completions", "model": "stand-in", "body": {"model": "stand-in"},
        "body_bytes": 100, "delivery": target, "status": "succeeded", "response": RESPONSE,
        "inference_attempts": 1, "resubmits": 0, "created_at": now, "completed_at": now,
    }  # fmt: skip


def steady_rate(receiver: WebhookReceiver, n: int) -> float:
    """Deliveries per second between the first and the N-th distinct successful POST."""
    seen: set[str | None] = set()
    successes = receiver.successes()
    for received in successes:
        seen.add(received.custom_id)
        if len(seen) == n:
            return (n - 1) / (received.at - successes[0].at)
    raise AssertionError(f"only {len(seen)} of {n} delivered")


async def gateway_rate(kind: str, n: int, c: int, timeout: float) -> tuple[float, int]:  # noqa: ASYNC109
    """(deliveries per second, body bytes of one delivery) through the app."""
    receiver = WebhookReceiver()
    async with fresh_database(kind) as url, serve(receiver) as receiver_url:
        await fill(url, [receiver_url + "/hook"] * n)
        with tempfile.TemporaryDirectory(prefix="bg_bench_data_") as data_dir:
            # One receiver: its destination may take every slot, as the raw clients do.
            env = app_env(
                url,
                "http://127.0.0.1:9",
                data_dir,
                DELIVERY_CONCURRENCY=str(c),
                DELIVERY_DESTINATION_CONCURRENCY=str(c),
                WEBHOOK_ALLOW_PRIVATE="true",
            )
            async with app_process(env):
                await wait_until(
                    lambda: len({r.custom_id for r in receiver.successes()}) >= n,
                    timeout=timeout,
                    interval=0.05,
                    what=lambda: f"{n} deliveries ({len(receiver.successes())} so far)",
                )
        return steady_rate(receiver, n), len(receiver.successes()[0].body)


async def raw_rate(n: int, c: int, size: int, timeout: float) -> float:  # noqa: ASYNC109
    """N POSTs of `size`-byte JSON bodies to a fresh receiver from C clients in another process
    (bench.direct_client), as the gateway's come from its own; per second, timed like the gateway."""
    receiver = WebhookReceiver()
    async with serve(receiver) as url:
        await direct_client.seconds("hook", url, n, c, size, timeout)
    return steady_rate(receiver, n)


async def main(args: argparse.Namespace) -> None:
    gateway: list[float] = []
    raw: list[float] = []
    for r in range(args.rounds):
        rate, size = await gateway_rate(args.db, args.requests, args.concurrency, args.timeout)
        gateway.append(rate)
        raw.append(await raw_rate(args.requests, args.concurrency, size, args.timeout))
        print(
            f"round {r + 1}/{args.rounds}: gateway {gateway[-1]:,.0f}/s, raw httpx {raw[-1]:,.0f}/s",
            flush=True,
        )
    print(
        f"bench.delivery  db={args.db}  deliveries={args.requests}  "
        f"concurrency={args.concurrency}  body={size} B"
    )
    summary.report(
        summary.Outcome(
            path=f"Webhook delivery, concurrency {args.concurrency} ({args.db})",
            measured=f"gateway {summary.rates(gateway)} vs raw httpx {summary.rates(raw)}",
            figures=summary.ratios(gateway, raw),
            goal=0.7,
        )
    )


def parse_args() -> argparse.Namespace:
    return options("bench.delivery", __doc__, requests=10_000, concurrency=64).parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
