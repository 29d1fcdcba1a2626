"""The local backend: runs each line against an OpenAI-compatible inference server.

Ollama, LM Studio, vLLM and llama.cpp all serve /v1/chat/completions and friends. Calls run at
most LOCAL_CONCURRENCY at a time across all batches of this process, a fixed number or one that
adapts to the server (auto, see concurrency.py); transient failures (connection errors, 408, 429,
5xx) are retried with backoff, honouring Retry-After. Anthropic Messages lines (/v1/messages) run
as chat completions, translated both ways.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import replace
from typing import Any, Literal

import httpcore
import httpx

from app.backends.base import BackendStatus, BatchLine, LineResult, ask_models
from app.backends.concurrency import INITIAL_LIMIT, Call, ConcurrencyLimit
from app.backends.embedded import EmbeddedServer
from app.backends.outage import ServerOutage
from app.formats.anthropic_messages import (
    MESSAGES_URL,
    UnreadableAnswer,
    UnsupportedContent,
    to_chat,
    to_message,
)
from app.ground import metrics
from app.ground.backends import BackendSpec
from app.ground.config import Settings
from app.net.outbound import NO_ANSWER, RETRYABLE_STATUS, ClientPool, RetryPolicy, http_client, post_json

PROBE_TIMEOUT_SECONDS = 3.0
# Finished results that may wait for the caller to take them, per concurrency slot. Unbounded, a
# server faster than the database filled memory with results: a 50,000-line batch of 4 KB lines
# took the process from 120 to 390 MB. Bounded, the workers pause while the caller stores.
RESULTS_WAITING_PER_SLOT = 4
# Answers that say the server is too busy (auto concurrency backs off on them, as on timeouts and
# refused connections). A 500 is left out: it is as often the request's own doing.
OVERLOADED_STATUS = frozenset({429, 502, 503, 504})
# Auto concurrency backs off while calls take more than this share of LOCAL_TIMEOUT_SECONDS: a
# server that queues calls this long is one busy round away from timing them out.
LATENCY_CEILING_SHARE = 0.25


class LocalBackend:
    """Runs batch lines against LOCAL_BASE_URL, or the embedded server when one is given."""

    def __init__(
        self, settings: Settings, embedded: EmbeddedServer | None = None, spec: BackendSpec | None = None
    ) -> None:
        # Without a spec: the shorthand `local` backend (LOCAL_BASE_URL, LOCAL_API_KEY, ...).
        spec = spec or settings.shorthand_backends()[0]
        self.name = spec.name
        concurrency = spec.concurrency or settings.local_concurrency
        max_concurrency = settings.local_max_concurrency
        self.embedded = embedded
        # No URL and no embedded server: a process that runs no lines (an api process).
        base_url = embedded.base_url if embedded else spec.base_url or "embedded (not run here)"
        self.base_url = base_url.rstrip("/")
        self.retries = RetryPolicy(settings.local_max_retries, settings.local_retry_backoff_seconds)
        self.timeout_seconds = spec.timeout_seconds or settings.local_timeout_seconds
        self.limit = _limit(concurrency, max_concurrency, embedded, self.timeout_seconds)
        self.concurrency = self.limit.maximum  # workers: each call then waits for room under the limit
        metrics.BACKEND_CONCURRENCY.labels(self.name).set(self.limit.current)
        self.outage = ServerOutage(settings.local_outage_max_seconds, settings.local_retry_backoff_seconds)
        headers = {"authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
        # Probes go through httpx; lines through httpcore (see post_json), one connection pool
        # per line in flight (see ClientPool), as many as the limit may ever allow.
        self._client = http_client(self.timeout_seconds, headers=headers)
        tls = httpx.create_ssl_context()
        self._lines = ClientPool(
            self.limit.maximum,
            lambda: httpcore.AsyncConnectionPool(ssl_context=tls, max_connections=1),
        )
        self._line_headers = [(name.encode(), value.encode()) for name, value in headers.items()]

    @property
    def concurrency_now(self) -> int:
        """The most calls the limit allows in flight now."""
        return self.limit.current

    @property
    def in_flight(self) -> int:
        return self.limit.in_flight

    async def close(self) -> None:
        await self._client.aclose()
        await self._lines.aclose()

    async def probe(self) -> BackendStatus:
        if self.embedded is not None:
            # Its supervisor knows; an HTTP probe would wait behind a generation (llama.cpp
            # answers /models only between two).
            return self._status(self.embedded.ready, self.embedded.describe())
        return await self._probe_server()

    async def _probe_server(self) -> BackendStatus:
        """Ask the server for its models (GET /models), with a short timeout."""
        url = f"{self.base_url}/models"
        response = await ask_models(self, self._client, url, PROBE_TIMEOUT_SECONDS, _check_key)
        if isinstance(response, BackendStatus):
            return response
        if response.status_code >= 500:
            return self._status(False, f"GET /models answered {response.status_code}")
        if response.status_code >= 400:
            return self._status(True, "answers (it lists no models)")  # not every server has /models
        try:
            models = [m.get("id") for m in response.json().get("data", [])]
        except (ValueError, AttributeError):
            models = []
        detail = f"{len(models)} models: {', '.join(map(str, models[:5]))}" if models else "reachable"
        return self._status(True, detail)

    def _status(self, reachable: bool, detail: str) -> BackendStatus:
        return BackendStatus(self.name, self.base_url, reachable, detail)

    async def run(self, lines: AsyncIterable[BatchLine]) -> AsyncIterator[LineResult]:
        """Run the lines as they are read, yielding each result as soon as it is known (in
        completion order). `concurrency` workers take lines, each call waiting for room under the
        limit. At most `concurrency` lines wait beyond those running, and at most
        RESULTS_WAITING_PER_SLOT times `concurrency` results wait to be taken, so memory stays
        bounded for any batch size and any speed of the caller."""
        todo: asyncio.Queue[BatchLine | None] = asyncio.Queue(maxsize=self.concurrency)
        done: asyncio.Queue[LineResult | None] = asyncio.Queue(
            maxsize=RESULTS_WAITING_PER_SLOT * self.concurrency
        )

        async def feed() -> None:
            try:
                async for line in lines:
                    await todo.put(line)
            finally:
                # One end mark per worker, even after an error; none when torn down with the
                # workers, as no one is left to take them.
                feeding = asyncio.current_task()
                if feeding is not None and not feeding.cancelling():
                    for _ in range(self.concurrency):
                        await todo.put(None)

        async def work() -> None:
            while (line := await todo.get()) is not None:
                try:
                    result = await self.run_line(line)
                except Exception as exc:  # a bug must not lose the line: it becomes its error
                    result = _failed(line, 1, "internal_error", f"{type(exc).__name__}: {exc}")
                await done.put(result)
            await done.put(None)

        feeder = asyncio.create_task(feed())
        workers = [asyncio.create_task(work()) for _ in range(self.concurrency)]
        try:
            running = len(workers)
            while running:
                if (result := await done.get()) is None:
                    running -= 1
                else:
                    yield result
            await feeder  # a failure to read the lines is the run's failure
        finally:
            for task in (feeder, *workers):
                task.cancel()
            await asyncio.gather(feeder, *workers, return_exceptions=True)

    async def run_line(self, line: BatchLine) -> LineResult:
        """Run one line with bounded retries of transient failures."""
        if line.url == MESSAGES_URL:
            return await self._run_message(line)
        return await self._post(line, line.url, line.body)

    async def _run_message(self, line: BatchLine) -> LineResult:
        """An Anthropic Messages line, run as a chat completion; a success answers a Message."""
        try:
            chat = to_chat(line.body)
        except UnsupportedContent as exc:
            # Refused before any call: no attempt was made, so none is counted.
            return _failed(line, 0, "invalid_request", str(exc))
        result = await self._post(line, "/v1/chat/completions", chat)
        if result.error is not None or result.response is None:
            return result  # the server's own error answer, as for any other line
        try:
            message = to_message(result.response["body"], str(line.body.get("model", "")))
        except UnreadableAnswer as exc:
            # The server answered, but nothing a Message can say: the line fails with why.
            return _failed(line, result.attempts, "unreadable_answer", str(exc))
        return replace(result, response={**result.response, "body": message})

    async def _post(self, line: BatchLine, path: str, body: dict[str, Any]) -> LineResult:
        """POST `body` to the server's `path` (an OpenAI /v1/... path), retrying transient
        failures, and waiting out an outage of the whole server (see outage.py)."""
        url = self.base_url + path.removeprefix("/v1")
        attempt = tries = rounds = 0
        first_failure = failing_since = math.inf
        while True:
            attempt, tries = attempt + 1, tries + 1
            started = time.monotonic()
            answer = await self._call(line, attempt, url, body)
            if isinstance(answer, httpx.Response) and answer.status_code not in RETRYABLE_STATUS:
                self.outage.answered()
                return _result(line, attempt, answer)
            # The line is failing from when its call failed, not began: a call in flight when the
            # server died began before the answers other lines got just before it, and counting
            # from its start took those for the server answering, so the line failed on its own.
            failing_since, first_failure = min(failing_since, time.monotonic()), min(first_failure, started)
            # A timeout is not retried: the server has the request, and a retry would only
            # multiply LOCAL_TIMEOUT_SECONDS.
            timed_out = isinstance(answer, LineResult) and (answer.error or {}).get("code") == "timeout"
            if not timed_out and self.retries.allows(tries):
                asked = answer.headers.get("retry-after") if isinstance(answer, httpx.Response) else None
                await asyncio.sleep(self.retries.wait(tries, asked))
                continue
            failed = answer if isinstance(answer, LineResult) else _result(line, attempt, answer)
            if self.embedded is not None and (why := self.embedded.failure()):
                return _failed(line, attempt, "model_unavailable", why)
            rounds += 1
            wait = await self._outage_wait(failed, failing_since, first_failure, rounds)
            if wait is None:
                return failed
            await self.outage.wait(wait)
            tries, failing_since = 0, math.inf

    async def _call(
        self, line: BatchLine, attempt: int, url: str, body: dict[str, Any]
    ) -> httpx.Response | LineResult:
        """One POST, in its turn under the limit: the server's answer, or the failure of a call
        that got none."""
        try:
            async with self.limit.slot() as call:
                started = time.monotonic()
                try:
                    async with self._lines.client() as pool:
                        with metrics.backend_call(self.name) as outcome:
                            response = await post_json(
                                pool, url, body, self._line_headers, self.timeout_seconds
                            )
                            outcome[0] = "ok" if response.is_success else "error"
                except (httpcore.ReadTimeout, httpcore.WriteTimeout) as exc:
                    call.overloaded()
                    return _failed(line, attempt, "timeout", f"no answer within the timeout ({exc!r})")
                except NO_ANSWER as exc:
                    call.overloaded()
                    return _failed(line, attempt, "connection_error", f"{type(exc).__name__}: {exc}")
                _report(call, response, time.monotonic() - started)
                return response
        finally:
            metrics.BACKEND_CONCURRENCY.labels(self.name).set(self.limit.current)

    async def _outage_wait(
        self, failed: LineResult, failing_since: float, first_failure: float, round_: int
    ) -> float | None:
        """For a line whose tries are spent: seconds to wait before trying again, when it failed
        for the server's trouble rather than its own; None when it fails (see outage.py)."""
        if self.outage.too_old(first_failure):
            return None
        if not self.outage.answered_since(failing_since) and not (await self._probe_server()).reachable:
            error = failed.error or {}
            self.outage.begin(f"{error.get('code')}: {error.get('message')}")
            return None if self.outage.too_old(first_failure) else self.outage.recheck_after(round_)
        return 0.0 if self.outage.overlapped(failing_since) else None

    def outage_status(self) -> BackendStatus | None:
        """Unreachable while lines wait for the server (or the embedded one is not ready), else None."""
        if self.embedded is not None and not self.embedded.ready:
            return self._status(False, self.embedded.describe())
        if (outage := self.outage.describe()) is None:
            return None
        return self._status(False, outage)


def _limit(
    concurrency: int | Literal["auto"], maximum: int, embedded: EmbeddedServer | None, timeout: float
) -> ConcurrencyLimit:
    """LOCAL_CONCURRENCY's limit: fixed at a number, else adaptive up to LOCAL_MAX_CONCURRENCY."""
    if concurrency != "auto":
        return ConcurrencyLimit(concurrency, adaptive=False)
    # llama_cpp.server answers one request at a time: more only queue there, so start at one.
    initial = 1 if embedded is not None else INITIAL_LIMIT
    return ConcurrencyLimit(maximum, initial=initial, latency_ceiling=timeout * LATENCY_CEILING_SHARE)


def _report(call: Call, response: httpx.Response, latency: float) -> None:
    """Tell the limit what an answer says of the server's load."""
    if response.is_success:
        call.ok(latency)
    elif response.status_code in OVERLOADED_STATUS:
        call.overloaded()
    else:
        call.failed()


def _check_key(_: httpx.Response) -> str:
    return "check LOCAL_API_KEY"


def _result(line: BatchLine, attempts: int, response: httpx.Response) -> LineResult:
    try:
        body: Any = response.json()
    except ValueError:
        body = {"raw": response.text[:4096]}
    request_id = response.headers.get("x-request-id") or f"req_local_{line.request_id}_{attempts}"
    payload = {"status_code": response.status_code, "request_id": request_id, "body": body}
    if response.is_success:
        return LineResult(line.request_id, line.custom_id, payload, None, attempts)
    message = (
        body.get("error", {}).get("message")
        if isinstance(body, dict) and isinstance(body.get("error"), dict)
        else None
    )
    code = "server_error" if response.status_code >= 500 else f"http_{response.status_code}"
    error = {"code": code, "message": message or f"inference server answered {response.status_code}"}
    return LineResult(line.request_id, line.custom_id, payload, error, attempts)


def _failed(line: BatchLine, attempts: int, code: str, message: str) -> LineResult:
    """A line the server never answered: no response, only the error."""
    return LineResult(line.request_id, line.custom_id, None, {"code": code, "message": message}, attempts)
