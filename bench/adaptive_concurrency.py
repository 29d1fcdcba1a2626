"""Auto concurrency (LOCAL_CONCURRENCY=auto) against the best fixed concurrency, on a server of
limited capacity.

    .venv/bin/python -m bench.adaptive_concurrency [--capacity 16] [--latency 0.1] [--lines 1200]
        [--fixed 8,12,16,24,32,48] [--rounds 1] [--url URL --model M --max-tokens T]

The server: the inference stand-in serving at most CAPACITY chat completions at once, each answered
after LATENCY seconds; a call beyond them waits up to two latencies for a place, then is answered
429 (bench.capacity_server, in a process of its own). With --url, a running OpenAI-compatible server
instead (e.g. llama_cpp.server), sent MODEL with max_tokens T. The client: the local backend
(app.backends.local) in this process, with the default settings (3 retries, 0.5 s backoff), running
LINES chat lines first at each fixed LOCAL_CONCURRENCY, then with LOCAL_CONCURRENCY unset (auto, its
default). Figures: auto's lines per second over the best fixed concurrency's (of the runs where every
line succeeded), and the share of auto's calls answered 429 (every retried call: the stand-in fails
calls no other way).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from app.backends.base import BatchLine
from app.backends.local import LocalBackend
from app.ground.config import Settings
from bench import summary
from testkit import chat, wait_until
from testkit.processes import free_port


@dataclass(frozen=True)
class Run:
    concurrency: str  # a number, or "auto"
    rate: float  # lines per second, from the first line sent to the last result
    calls: int
    retried: int  # calls answered 429 (or any other retryable failure)
    failed: int  # lines that did not succeed
    peak: int  # the highest limit seen
    end: int  # the limit at the end

    def shown(self) -> str:
        return (
            f"  {self.concurrency:>5}: {self.rate:7.1f} lines/s, {self.retried:4} of {self.calls} calls "
            f"429 ({self.retried / self.calls:.1%}), {self.failed} lines failed, limit peak {self.peak} "
            f"end {self.end}"
        )


@contextlib.asynccontextmanager
async def capacity_server(capacity: int, latency: float) -> AsyncIterator[str]:
    """bench.capacity_server in its own process; its base URL (…/v1)."""
    port = free_port()
    args = (str(port), str(capacity), str(latency), str(2 * latency))
    server = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.capacity_server", *args)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        async with httpx.AsyncClient() as client:

            async def up() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get(url + "/models")).status_code > 0
                return False

            await wait_until(up, timeout=30, what="bench.capacity_server to answer")
        yield url
    finally:
        server.terminate()
        await server.wait()


async def run(url: str, concurrency: int | None, args: argparse.Namespace) -> Run:
    """The lines through a local backend of that LOCAL_CONCURRENCY (None: unset, auto)."""
    chosen = {} if concurrency is None else {"local_concurrency": concurrency}
    backend = LocalBackend(Settings(_env_file=None, local_base_url=url, **chosen))  # type: ignore[call-arg]

    async def lines() -> AsyncIterator[BatchLine]:
        for i in range(args.lines):
            body = {"model": args.model, "messages": chat(f"say hi to {i}"), "max_tokens": args.max_tokens}
            yield BatchLine(i, f"c{i}", "/v1/chat/completions", body)

    calls = retried = failed = 0
    peak = backend.concurrency_now
    started = time.monotonic()
    try:
        async with asyncio.timeout(args.timeout):
            async for result in backend.run(lines()):
                calls, retried = calls + result.attempts, retried + result.attempts - 1
                failed += not result.succeeded
                peak = max(peak, backend.concurrency_now)
    finally:
        await backend.close()
    rate = (args.lines - failed) / (time.monotonic() - started)
    shown = "auto" if concurrency is None else str(concurrency)
    return Run(shown, rate, calls, retried, failed, peak, backend.concurrency_now)


async def one_round(url: str, args: argparse.Namespace) -> tuple[Run, Run]:
    """Every fixed concurrency, then auto: (the best fixed run, the auto run)."""
    fixed = []
    for c in args.fixed:
        fixed.append(await run(url, c, args))
        print(fixed[-1].shown(), flush=True)
    auto = await run(url, None, args)
    print(auto.shown(), flush=True)
    whole = [r for r in fixed if r.failed == 0] or fixed
    return max(whole, key=lambda r: r.rate), auto


async def main(args: argparse.Namespace) -> None:
    for name in ("LOCAL_CONCURRENCY", "LOCAL_MAX_CONCURRENCY"):
        os.environ.pop(name, None)  # auto with no setting: the defaults
    server = contextlib.nullcontext(args.url) if args.url else capacity_server(args.capacity, args.latency)
    best: list[Run] = []
    auto: list[Run] = []
    async with server as url:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            b, a = await one_round(url, args)
            best.append(b)
            auto.append(a)
    what = args.url or f"capacity-{args.capacity} stand-in, {args.latency * 1000:g} ms a call"
    print(f"bench.adaptive_concurrency  {what}  lines={args.lines}  rounds={args.rounds}")
    summary.report(
        summary.Outcome(
            path=f"Auto concurrency vs the best fixed one ({what})",
            measured=f"auto {summary.rates([a.rate for a in auto], 'lines/s')} vs fixed "
            f"{','.join(b.concurrency for b in best)} {summary.rates([b.rate for b in best], 'lines/s')}",
            figures=summary.ratios([a.rate for a in auto], [b.rate for b in best]),
            goal=0.9,
        )
    )
    summary.report(
        summary.Outcome(
            path=f"Share of auto's calls answered 429 ({what})",
            measured=f"{sum(a.retried for a in auto)} of {sum(a.calls for a in auto)} calls",
            figures=[a.retried / a.calls for a in auto],
            goal=0.01,
            at_most=True,
        )
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.adaptive_concurrency", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--capacity", type=int, default=16, help="calls the stand-in serves at once")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the stand-in takes per call")
    parser.add_argument("--lines", type=int, default=1200)
    parser.add_argument(
        "--fixed", type=lambda s: [int(c) for c in s.split(",")], default=[8, 12, 16, 24, 32, 48]
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--url", help="a running OpenAI-compatible server (…/v1) instead of the stand-in")
    parser.add_argument("--model", default="stand-in")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600, help="deadline of each run, seconds")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
