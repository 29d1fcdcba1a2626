"""A real model: the embedded llama.cpp server (gemma3 270M) behind the gateway, against the same
requests sent straight to it at its best concurrency.

    .venv/bin/python -m bench.real_model [--db sqlite|postgres] [--requests 200]
        [--rounds 2] [--concurrencies 1,2,4] [--probe 50] [--max-tokens 8]

One llama_cpp.server process (started as the app's embedded server starts it: same model file,
same flags) serves both sides, started once. Every request is the same short chat at temperature
0 with `max_tokens`, so both sides generate the same tokens. Limit: the N requests sent straight
to the server by C httpx clients from a process of their own, at the best C of --concurrencies,
each tried first on --probe requests (llama-cpp-python serves one request at a time: more
clients mostly queue). Gateway: `batchgate serve` (role all) with LOCAL_BASE_URL at that server
and LOCAL_CONCURRENCY that best C; the N requests arrive by one POST /api/requests/bulk, measured
until the database holds N succeeded requests (polled every 20 ms). Each of --rounds rounds runs
both sides, in alternating order, and gives one ratio; the figure is their median. Goal 0.95: the
gateway must not slow the server down. Without llama-cpp-python or the model (`make realmodel`) it reports the
goal as not run. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from bench import summary
from bench.common import clients, fresh_database, gateway, hammer, options
from bench.http_intake import usage
from bench.local_e2e import wait_succeeded
from testkit import NO_DELIVERY, wait_until
from testkit.processes import free_port
from testkit.realmodel import MODEL, STARTUP_SECONDS, installed

GOAL = 0.95


def chat_body(i: int, max_tokens: int) -> dict[str, Any]:
    """The model body both sides send: short, deterministic, the same length every time."""
    content = f"Say hello to number {i} in three words."
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


@asynccontextmanager
async def model_server() -> AsyncIterator[str]:
    """llama_cpp.server with the embedded model, as the app starts it; its base URL (no /v1)."""
    from app.backends.embedded_model import model_file, server_command, server_environment

    port = free_port()
    path = await asyncio.to_thread(model_file, None)
    server = await asyncio.create_subprocess_exec(
        *server_command(path, port),
        env=server_environment(),
        stdout=asyncio.subprocess.DEVNULL,  # its access log: a line per call
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        assert server.returncode is None, f"llama_cpp.server exited with {server.returncode}"
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(url + "/v1/models")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await wait_until(up, timeout=STARTUP_SECONDS, interval=0.2, what="llama_cpp.server up")
        yield url
    finally:
        if server.returncode is None:
            server.terminate()
        await server.wait()


async def direct_calls(url: str, n: int, c: int, max_tokens: int) -> None:
    """In the child process: N calls from C clients; prints the seconds they took."""
    async with clients(url, c) as pool:
        for client in pool:
            client.timeout = httpx.Timeout(300)

        async def one(w: int, i: int) -> None:
            answer = await pool[w].post("/v1/chat/completions", json=chat_body(i, max_tokens))
            answer.raise_for_status()

        print(await hammer(n, c, one, timeout=600))


async def direct_rate(url: str, n: int, c: int, max_tokens: int) -> float:
    """N calls straight to the server from a process of its own, C at a time; calls per second."""
    caller = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.real_model", "--direct", url,
        "--requests", str(n), "--concurrency", str(c), "--max-tokens", str(max_tokens),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await caller.communicate()
    if caller.returncode != 0:
        raise RuntimeError(f"the direct client exited with {caller.returncode}")
    return n / float(out.decode().strip().splitlines()[-1])


async def gateway_rate(kind: str, url: str, n: int, c: int, max_tokens: int, timeout: float) -> float:  # noqa: ASYNC109
    """N requests through `batchgate serve`, from the submit until all have succeeded; per second."""
    items = [
        {"custom_id": f"real-{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": chat_body(i, max_tokens), "delivery_config": NO_DELIVERY}
        for i in range(n)
    ]  # fmt: skip
    async with (
        fresh_database(kind) as db_url,
        gateway(
            db_url,
            url,
            LOCAL_CONCURRENCY=str(c),
            LOCAL_BATCH_MAX_AGE_SECONDS="0.2",
            LOCAL_TIMEOUT_SECONDS="300",
            # The default tick, not the tests' 0.2 s: every tick runs each step's queries even
            # when idle, CPU the model's server on the same cores needs (an idle gateway took 17%
            # of a core at 0.2 s, 5% at 1 s). Batches still form every 0.25 s, and the steps
            # after them are woken, not ticked.
            TICK_SECONDS="1.0",
            LEASE_SECONDS="60",
        ) as (process, client),
    ):
        start, cpu_before = time.monotonic(), sum(usage(process.pid)[:2])
        answer = await client.post("/api/requests/bulk", json=items)
        if answer.status_code not in (200, 202):
            raise RuntimeError(f"bulk submit: {answer.status_code} {answer.text[:300]}")
        await wait_succeeded(db_url, n, timeout)
        seconds, cpu = time.monotonic() - start, sum(usage(process.pid)[:2]) - cpu_before
        # The gateway's own CPU is what it takes from a model served on the same cores.
        print(f"  gateway: {seconds:.1f} s, app CPU {cpu:.1f} s ({cpu / seconds:.0%} of a core)", flush=True)
        return n / seconds


async def measured_rounds(args: argparse.Namespace, url: str, c: int) -> tuple[list[float], list[float]]:
    """--rounds rounds of both sides at concurrency C; the order alternates each round, so a
    server that drifts (warming, throttling) weighs on both sides alike."""
    through: list[float] = []
    limit: list[float] = []
    for r in range(args.rounds):
        sides = ["direct", "gateway"] if r % 2 == 0 else ["gateway", "direct"]
        for side in sides:
            if side == "direct":
                limit.append(await direct_rate(url, args.requests, c, args.max_tokens))
            else:
                rate = await gateway_rate(args.db, url, args.requests, c, args.max_tokens, args.timeout)
                through.append(rate)
        print(f"  round {r + 1}: gateway {through[-1]:.2f}/s, direct {limit[-1]:.2f}/s", flush=True)
    return through, limit


async def main(args: argparse.Namespace) -> None:
    path = (
        f"Real model (llama.cpp, gemma3 270M): {args.rounds} rounds of {args.requests} chat requests "
        f"through the gateway ({args.db})"
    )
    if not installed():
        summary.report(summary.not_run(path, GOAL, "not run: no llama-cpp-python or model (make realmodel)"))
        return
    concurrencies = [int(c) for c in args.concurrencies.split(",")]
    async with model_server() as url:
        await direct_rate(url, 4, 1, args.max_tokens)  # warm up: the first call loads the weights
        probes = {c: await direct_rate(url, args.probe, c, args.max_tokens) for c in concurrencies}
        for c, r in probes.items():
            print(f"  direct, {args.probe} requests at concurrency {c}: {r:.1f} requests/s", flush=True)
        best = max(probes, key=lambda c: probes[c])
        through, limit = await measured_rounds(args, url, best)
    print(
        f"bench.real_model  db={args.db}  requests={args.requests}  rounds={args.rounds}  "
        f"max_tokens={args.max_tokens}  gateway (LOCAL_CONCURRENCY={best}) "
        f"{summary.rates(through, '/s', 2)}, direct at concurrency {best} {summary.rates(limit, '/s', 2)}"
    )
    summary.report(
        summary.Outcome(
            path=path,
            measured=f"gateway {summary.rates(through, 'req/s', 2)} "
            f"vs direct {summary.rates(limit, 'req/s', 2)} "
            f"at its best concurrency, {best} (probes, req/s: "
            f"{', '.join(f'{c}: {r:.1f}' for c, r in probes.items())})",
            figures=summary.ratios(through, limit),
            goal=GOAL,
        )
    )


def parse_args() -> argparse.Namespace:
    parser = options("bench.real_model", __doc__, requests=200, concurrency=1, rounds=2)
    parser.add_argument("--concurrencies", default="1,2,4", help="the direct client's, the best is the limit")
    parser.add_argument("--probe", type=int, default=50, help="requests per concurrency tried")
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens generated per request")
    parser.add_argument("--direct", metavar="URL", help=argparse.SUPPRESS)  # the direct client's child
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.direct:
        asyncio.run(
            direct_calls(arguments.direct, arguments.requests, arguments.concurrency, arguments.max_tokens)
        )
    else:
        asyncio.run(main(arguments))
