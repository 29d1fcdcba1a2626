"""The app as users run it: `python -m app serve` in a child process, to be killed for real."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tests.support.waiting import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def app_process(env: dict[str, str]) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`python -m app serve` in a child process, ready when /health answers."""
    port = free_port()
    child_env = {**os.environ, **env, "PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "warning"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "serve", env=child_env)
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
        if process.returncode is None:
            process.kill()
        await process.wait()
