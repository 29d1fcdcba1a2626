"""Shared pieces of the benchmarks: a fresh database, a bounded load loop, the table."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from app.db.session import Database
from app.ground.clock import utcnow
from testkit import fast_settings, fresh_postgres, migrate, sqlite_url
from testkit.processes import app_env, app_process


@asynccontextmanager
async def gateway(
    database_url: str, inference_url: str, **env: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, httpx.AsyncClient]]:
    """`batchgate serve` in its own process (a fresh DATA_DIR, app_env's settings and `env`),
    with an httpx client of its API."""
    with tempfile.TemporaryDirectory(prefix="bg_bench_data_") as data_dir:
        async with (
            app_process(app_env(database_url, inference_url, data_dir, **env)) as (process, url),
            httpx.AsyncClient(base_url=url, timeout=120) as client,
        ):
            yield process, client


@asynccontextmanager
async def fresh_database(kind: str) -> AsyncIterator[str]:
    """A migrated, empty database (SQLite file in a temp dir, or a new PostgreSQL database), removed after."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bg_bench_") as tmp:
            yield await migrate(sqlite_url(Path(tmp)))
        return
    async with fresh_postgres(prefix="bg_bench") as url:
        yield await migrate(url)


async def hammer(
    n: int,
    concurrency: int,
    op: Callable[[int, int], Awaitable[None]],
    timeout: float,  # noqa: ASYNC109 - every benchmark phase has a deadline
) -> float:
    """Run op(worker, i) for i in range(n) on `concurrency` workers; return the elapsed seconds."""
    items = iter(range(n))

    async def worker(w: int) -> None:
        for i in items:  # workers share one iterator: exactly n calls in all
            await op(w, i)

    start = time.perf_counter()
    # A failure or the deadline cancels every worker: no stray tasks outlive the phase.
    try:
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:
            for w in range(concurrency):
                group.create_task(worker(w))
    except TimeoutError:
        raise TimeoutError(f"{n} operations did not finish within {timeout:g} s") from None
    return time.perf_counter() - start


def request_row(data: dict[str, Any], status: str = "pending") -> dict[str, Any]:
    """The requests row intake would insert for a payload, for benchmarks that write it raw."""
    return {
        "custom_id": data["custom_id"],
        "origin": "api",
        "backend": "local",
        "endpoint": data["url"],
        "model": data["body"]["model"],
        "body": data["body"],
        "body_bytes": 200,
        "delivery": data["delivery_config"],
        "status": status,
        "created_at": utcnow(),
    }


@asynccontextmanager
async def clients(base_url: str, count: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """`count` independent HTTP clients (one keep-alive connection each), as separate callers."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=30))
            for _ in range(count)
        ]


def rate(rates: list[float]) -> str:
    """The median of the rounds' rates, per second."""
    return f"{statistics.median(rates):,.0f} /s"


def ratio(numerators: list[float], denominators: list[float]) -> str:
    """The median of the per-round ratios, with their range when there are several rounds."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    spread = f"  ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}{spread}"


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(title)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def options(
    module: str, doc: str, requests: int = 2000, concurrency: int = 32, rounds: int = 3
) -> argparse.ArgumentParser:
    """The options every benchmark takes, with its own defaults; add its own, then parse."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--requests", type=int, default=requests)
    parser.add_argument("--concurrency", type=int, default=concurrency)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--timeout", type=float, default=300, help="deadline of each phase, seconds")
    return parser


def parse_args(prog: str, description: str) -> argparse.Namespace:
    """The options every benchmark takes, with the common defaults."""
    return options(prog.removeprefix("python -m "), description).parse_args()


def raw_database(url: str) -> Database:
    """The database the raw limits write through, synced as the app's is (SQLITE_SYNCHRONOUS)."""
    return Database(url, fast_settings(url).sqlite_synchronous)


async def child_output(module: str, *args: str, timeout: float = 600) -> str:  # noqa: ASYNC109
    """Run `python -m module args` as a process of its own (a limit measured apart from the
    harness); the last line it printed. Killed at `timeout`; a failure raises."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, stdout=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"{module} {args[0] if args else ''} exited with {child.returncode}")
    return out.decode().strip().splitlines()[-1]
