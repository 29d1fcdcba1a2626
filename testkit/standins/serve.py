"""Run an ASGI app on an ephemeral port inside the current event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import uvicorn

_POLL_INTERVAL = 0.01


class _QuietServer(uvicorn.Server):
    """uvicorn server that leaves process signal handlers alone.

    Several servers may overlap in one loop and exit in any order; uvicorn's
    save/restore of SIGINT/SIGTERM handlers would then leave a dead server's
    handler installed and swallow Ctrl+C for the rest of the test run.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        # uvicorn only checks should_exit every 0.1 s; suites start many
        # servers, so notice the exit request sooner.
        counter = 0
        while not await self.on_tick(counter):
            for _ in range(10):
                await asyncio.sleep(_POLL_INTERVAL)
                if self.should_exit:
                    return
            counter = (counter + 1) % 864000


async def _run(server: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
    try:
        await server.serve(sockets=sockets)
    except SystemExit as exc:
        # uvicorn calls sys.exit() on bind/lifespan failure; a SystemExit
        # escaping a task would tear down the whole test loop.
        raise RuntimeError(f"uvicorn exited during startup (code {exc.code!r})") from exc


async def _stop(server: uvicorn.Server, task: asyncio.Task[None], wait: float) -> BaseException | None:
    """Ask the server to exit, wait up to ``wait`` seconds, then cancel it."""
    server.should_exit = True
    done, _ = await asyncio.wait({task}, timeout=wait)
    if not done:
        server.force_exit = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    if task.cancelled():
        return None
    return task.exception()


@contextlib.asynccontextmanager
async def serve(
    app: Any,
    *,
    startup_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
    graceful_timeout: int = 1,
    tls: tuple[Path, Path] | None = None,
) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 with an OS-chosen port; yield its base URL.

    ``graceful_timeout`` bounds how long shutdown waits for in-flight
    requests (e.g. deliberately slow stand-in handlers) before cancelling them.
    ``tls`` (certificate file, key file) serves HTTPS.
    """
    async with _served(app, None, startup_timeout, shutdown_timeout, graceful_timeout, tls) as server:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def serve_many(app: Any, ports: int, *, graceful_timeout: int = 1) -> AsyncIterator[list[str]]:
    """Serve ``app`` on `ports` OS-chosen ports of 127.0.0.1 from one server; yield their base
    URLs (as many origins, for what counts per origin)."""
    sockets = []
    try:
        for _ in range(ports):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        async with _served(app, sockets, 10.0, 10.0, graceful_timeout, None):
            yield [f"http://127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextlib.asynccontextmanager
async def serve_on(app: Any, sock: socket.socket) -> AsyncIterator[str]:
    """Serve ``app`` on ``sock``, already bound to a port of 127.0.0.1: for an app that must
    know the port it answers on before it starts; yield its base URL."""
    async with _served(app, [sock], 10.0, 10.0, 1, None):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def _served(
    app: Any,
    sockets: list[socket.socket] | None,
    startup_timeout: float,
    shutdown_timeout: float,
    graceful_timeout: int,
    tls: tuple[Path, Path] | None,
) -> AsyncIterator[uvicorn.Server]:
    """A started uvicorn server (on `sockets`, or on a port of its own), stopped afterwards."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="auto",
        timeout_graceful_shutdown=graceful_timeout,
        # Longer than httpx's own 5 s keep-alive: with both at 5 s, a client could send on a
        # connection the server was closing that instant, and the test saw httpx.ReadError.
        timeout_keep_alive=60,
        # As `batchgate serve` runs (app.__main__.server_options): the app reads X-Forwarded-*.
        proxy_headers=False,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(_run(server, sockets), name="uvicorn-standin")

    loop = asyncio.get_running_loop()
    deadline = loop.time() + startup_timeout
    while not server.started:
        if task.done():
            exc = None if task.cancelled() else task.exception()
            raise RuntimeError("uvicorn stopped before it started") from exc
        if loop.time() >= deadline:
            await _stop(server, task, shutdown_timeout)
            raise TimeoutError(f"uvicorn did not start within {startup_timeout}s")
        await asyncio.sleep(_POLL_INTERVAL)

    try:
        yield server
    except BaseException:
        # The body's exception is the interesting one; don't mask it.
        await _stop(server, task, shutdown_timeout)
        raise
    exc = await _stop(server, task, shutdown_timeout)
    if exc is not None:
        raise exc
