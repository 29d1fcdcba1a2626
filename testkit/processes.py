"""The app as users run it: `python -m app serve` in a child process, to be killed for real."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import httpx

from testkit.waiting import wait_until


def app_env(database_url: str, inference_url: str, data_dir: Path | str, **overrides: str) -> dict[str, str]:
    """The environment of an app process for tests: short ticks and backoffs, leases that run out
    quickly after a kill, no key, no signing; `overrides` (already upper-case names) win."""
    return {
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "API_KEYS": "",
        "LOCAL_BASE_URL": inference_url + "/v1",
        "LOCAL_CONCURRENCY": "4",
        "LOCAL_BATCH_MAX_AGE_SECONDS": "0.3",
        "TICK_SECONDS": "0.2",
        "LEASE_SECONDS": "2",
        "WEBHOOK_TIMEOUT_SECONDS": "3",  # delivery claims last LEASE_SECONDS + one send timeout
        "DELIVERY_RETRY_SCHEDULE": "0.05s,0.1s,0.2s,0.4s,0.5s,0.5s,0.5s",
        "WEBHOOK_SECRET": "",
        **overrides,
    }


# Ports the kernel hands out for bind(0) and outgoing connections (Linux's default range).
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A loopback port free now, for a server started in another process (the app, a benchmark's
    sink). Chosen at random below the kernel's ephemeral range: a port from bind(0) could be given
    to another test's server (every in-process one binds 0) between this check and the child's
    own bind, and the child would then fail to bind while /health answered from the other server
    (the kill -9 suites' "address already in use"). Below the range only another free_port() could
    take it, one chance in thousands."""
    low = int(EPHEMERAL.read_text().split()[0]) if EPHEMERAL.exists() else 32768
    for _ in range(200):
        port = random.randint(10_000, low - 1)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@asynccontextmanager
async def app_process(
    env: dict[str, str],
    wrapper: tuple[str, ...] = (),
    stderr: IO[str] | None = None,
    command: tuple[str, ...] = ("-m", "app", "serve"),
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`python -m app serve` (or `python *command*`) in a child process (run through `wrapper`,
    e.g. faketime), ready when /health answers; its log goes to `stderr` (a file) when given."""
    port = free_port()
    child_env = {**os.environ, "LOG_LEVEL": "warning", **env, "PORT": str(port), "HOST": "127.0.0.1"}
    # Its own process group: a wrapper (faketime) forks the app, and a kill must reach both.
    process = await asyncio.create_subprocess_exec(
        *wrapper,
        sys.executable,
        *command,
        env=child_env,
        start_new_session=True,
        stderr=stderr,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as client:

            async def healthy() -> bool:
                if process.returncode is not None:
                    raise RuntimeError(f"app exited with {process.returncode}")
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(healthy, timeout=30, interval=0.1, what="the app process to serve /health")
        yield process, url
    finally:
        kill(process)
        await process.wait()


def kill(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the app and everything in its process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
