"""The embedded inference server: with no LOCAL_BASE_URL, Batchgate runs llama.cpp's server itself
as a child process on a free loopback port and points the local backend at it.

The supervisor starts it with the app, waits until it answers GET /v1/models, restarts it when it
dies (at most EMBEDDED_MAX_RESTARTS times in a row, with backoff; a run that served for a while
resets the count) and stops it with the app: SIGTERM, then SIGKILL after a grace period. On Linux
the child also gets SIGKILL when Batchgate dies without stopping it (PR_SET_PDEATHSIG), so a killed
Batchgate leaves no orphan. No database here: core sees the server only through `status()`, and the
local backend asks `failure()` so that lines end with the reason instead of waiting for a server
that will not come.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable

import httpx

from app.backends.base import EmbeddedState, EmbeddedStatus
from app.backends.embedded_model import (
    CannotStart,
    check_installed,
    model_file,
    server_command,
    server_environment,
)
from app.ground.config import EMBEDDED_MODEL
from app.net.outbound import backoff_seconds

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 10.0
READY_POLL_SECONDS = 0.25
# A run that served this long was healthy: the next death starts the restart count afresh, so a
# server that dies once a day is restarted every time, and one that cannot stay up is given up.
STABLE_SECONDS = 60.0
STDERR_LINES_KEPT = 20
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedServer:
    """One llama_cpp.server child process, kept running while the app runs."""

    def __init__(
        self,
        model_path: str | None,
        max_restarts: int,
        restart_backoff_seconds: float,
        startup_timeout_seconds: float,
    ) -> None:
        self.model_path = model_path
        self.max_restarts = max_restarts
        self.restart_backoff_seconds = restart_backoff_seconds
        self.startup_timeout_seconds = startup_timeout_seconds
        # Fixed for the app's lifetime, so the local backend's URL never changes; a restart that
        # finds the port taken fails like any other and is retried.
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._state: EmbeddedState = "stopped"
        self._detail = "not started"
        self._restarts = 0
        self._last_failure = ""  # why the previous run ended, shown while the next one loads
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES_KEPT)

    def start(self) -> None:
        """Begin supervising; the server becomes ready in the background (status says when)."""
        self._set("starting", "starting")
        self._task = asyncio.create_task(self._supervise(), name="embedded-model")

    async def stop(self) -> None:
        """Stop supervising and end the process (no restart after this)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._end_process()
        if self._state != "failed":
            self._set("stopped", "stopped with the app")

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def ready(self) -> bool:
        return self._state == "ready"

    def failure(self) -> str | None:
        """Why the server is given up for good, or None while it runs or may still come."""
        return f"the embedded model failed: {self._detail}" if self._state == "failed" else None

    def status(self) -> EmbeddedStatus:
        return EmbeddedStatus(
            self._state, EMBEDDED_MODEL, self.base_url, self._detail, self.pid, self._restarts
        )

    def describe(self) -> str:
        """One line for the backend list: state, model and why."""
        return f"embedded {EMBEDDED_MODEL} {self._state}: {self._detail}"

    def _set(self, state: EmbeddedState, detail: str) -> None:
        self._state, self._detail = state, detail

    async def _supervise(self) -> None:
        try:
            check_installed()
            self._set("starting", "preparing the model file")
            model = await asyncio.to_thread(model_file, self.model_path)
        except (CannotStart, OSError, ValueError) as exc:
            self._give_up(str(exc))
            return
        command = server_command(model, self.port)
        failures = 0
        while True:
            reason, served_seconds = await self._run_once(command)
            failures = 1 if served_seconds >= STABLE_SECONDS else failures + 1
            if failures > self.max_restarts:
                self._give_up(f"{reason} (gave up after {failures} starts in a row)")
                return
            self._restarts += 1
            wait = backoff_seconds(self.restart_backoff_seconds, failures)
            self._last_failure = f"restart {failures} of {self.max_restarts} after: {reason}"
            self._set("starting", f"{self._last_failure} (in {wait:.1f} s)")
            log.warning("embedded model server %s; restarting in %.1f s", reason, wait)
            await asyncio.sleep(wait)

    def _give_up(self, why: str) -> None:
        self._set("failed", why)
        log.error("the embedded model cannot run: %s", why)

    async def _run_once(self, command: list[str]) -> tuple[str, float]:
        """Start the server, wait for it to answer, then for it to end. Returns why it ended and
        how long it served."""
        self._stderr.clear()
        self._set(
            "starting", f"loading {EMBEDDED_MODEL}" + (f"; {self._last_failure}" * bool(self._last_failure))
        )
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=server_environment(),
                # Its own session: a Ctrl-C in Batchgate's terminal reaches Batchgate only, which
                # then stops the server itself (and no restart races the shutdown).
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            return f"could not be started ({exc})", 0.0
        self._process = process
        reader = asyncio.create_task(self._keep_stderr(process))
        try:
            started = time.monotonic()
            if not await self._wait_ready(process):
                if process.returncode is None:
                    await self._end_process()
                    return f"did not answer within {self.startup_timeout_seconds:.0f} s", 0.0
                return self._exit_reason(process.returncode), 0.0
            ready_at = time.monotonic()
            self._set("ready", f"serving on {self.base_url} (ready in {ready_at - started:.1f} s)")
            log.info("embedded model server ready in %.1f s (pid %d)", ready_at - started, process.pid)
            code = await process.wait()
            return self._exit_reason(code), time.monotonic() - ready_at
        finally:
            if process.returncode is None:  # stopping: the pipe stays open until the process ends
                reader.cancel()
            await asyncio.wait({reader}, timeout=2)
            reader.cancel()  # a grandchild holding the pipe open must not keep it alive

    async def _wait_ready(self, process: asyncio.subprocess.Process) -> bool:
        """Poll GET /v1/models until it answers 200 (True), the process ends or time runs out."""
        deadline = time.monotonic() + self.startup_timeout_seconds
        async with httpx.AsyncClient(timeout=2.0) as client:
            while process.returncode is None and time.monotonic() < deadline:
                try:
                    if (await client.get(f"{self.base_url}/models")).status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass  # not listening yet
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(process.wait()), READY_POLL_SECONDS)
        return False

    def _exit_reason(self, code: int) -> str:
        if code < 0:  # its last words are not why it died
            return f"killed by {signal.Signals(-code).name}"
        last = next((line for line in reversed(self._stderr) if line.strip()), "")
        return f"exited with code {code}{': ' + last if last else ''}"

    async def _keep_stderr(self, process: asyncio.subprocess.Process) -> None:
        """Keep the last lines the server wrote (the reason it died is usually the last one), and
        keep reading so that a full pipe never blocks it."""
        assert process.stderr is not None
        while line := await process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self._stderr.append(text[:500])
            log.debug("embedded model: %s", text)

    async def _end_process(self) -> None:
        """SIGTERM its process group, SIGKILL after STOP_GRACE_SECONDS; always reaped."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        for sig, grace in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                await asyncio.wait_for(asyncio.shield(process.wait()), grace)
                return
            except TimeoutError:
                log.warning("embedded model server ignored SIGTERM for %.0f s: killing it", grace)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when its parent dies. The parent is the
    thread that forked it, here the event loop's thread, which lives as long as the app. Loaded
    before the fork: only async-signal-safe work runs between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl: nobody will stop us
            os._exit(1)

    return preexec
