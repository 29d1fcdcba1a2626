"""What every outbound HTTP adapter (backends and channels) agrees on: which answers are worth
another try, how long a Retry-After header asks to wait, and the backoff between tries."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Protocol, TypeVar

import httpcore
import httpx

from app.ground import jsontext

# 408 and 429 say "not now"; a 5xx is the server's own trouble. Every other 4xx is final.
RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))

# An adapter that waits in-process (a coroutine sleeping between tries) waits at most this long.
IN_PROCESS_WAIT_CAP_SECONDS = 120.0


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """The wait a Retry-After header asks for (delta-seconds or an HTTP date), within [0, cap].

    None when the header is absent or unreadable, including 'nan' and 'inf': a receiver's
    header must never become an infinite or undefined wait.
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), cap)


def backoff_seconds(base: float, attempt: int) -> float:
    """Exponential backoff from `base` for the n-th try (1-based), with jitter in [0.5, 1]."""
    return base * 2.0 ** (attempt - 1) * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How an adapter that waits in-process retries one call: at most `max_retries` times,
    waiting what Retry-After asks (capped) or an exponential backoff from `base_seconds`."""

    max_retries: int
    base_seconds: float

    def allows(self, attempt: int) -> bool:
        """Whether the call that was attempt number `attempt` (1-based) may be tried again."""
        return attempt <= self.max_retries

    def wait(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before the next try after attempt number `attempt`."""
        asked = retry_after_seconds(retry_after, IN_PROCESS_WAIT_CAP_SECONDS)
        return asked if asked is not None else backoff_seconds(self.base_seconds, attempt)


def http_client(timeout_seconds: float, **options: Any) -> httpx.AsyncClient:
    """A pooled httpx client whose connect timeout is at most 10 s of the whole timeout."""
    timeout = httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds))
    return httpx.AsyncClient(timeout=timeout, **options)


class Closable(Protocol):
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=Closable)


class ClientPool(Generic[C]):
    """HTTP clients (httpx or httpcore pools) lent out one request at a time, up to `size` at once.

    httpcore's connection pool looks at every connection it holds (an expiry check that polls
    the socket) each time it hands one to a request, so a single client with 64 connections
    spent most of a webhook delivery's CPU time there and delivered about a sixth of what 64
    clients do. A client per request in flight keeps that to the one or two connections it holds.
    Clients are made by `make` on first need, the most recently returned lent first, so its
    connections are the warm ones. Share one TLS context among them: building one costs ~30 ms.
    """

    def __init__(self, size: int, make: Callable[[], C]) -> None:
        self._slots = asyncio.Semaphore(size)
        self._make = make
        self._idle: list[C] = []
        self._made: list[C] = []

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[C]:
        """A client of the caller's own until the block ends."""
        async with self._slots:
            if self._idle:
                lent = self._idle.pop()
            else:
                lent = self._make()
                self._made.append(lent)
            try:
                yield lent
            finally:
                self._idle.append(lent)

    async def aclose(self) -> None:
        for made in self._made:
            await made.aclose()


# What a POST through httpcore raises when it got no answer: a timeout, or no connection.
NO_ANSWER = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ConnectionNotAvailable,
)


def timeouts(seconds: float) -> dict[str, float]:
    """httpcore's timeout extension for a call of `seconds`, connecting within at most 10 s of it."""
    return {"connect": min(10.0, seconds), "read": seconds, "write": seconds, "pool": seconds}


async def post_json(
    pool: httpcore.AsyncConnectionPool,
    url: str,
    body: Any,
    headers: list[tuple[bytes, bytes]],
    timeout_seconds: float,
) -> httpx.Response:
    """POST `body` as JSON through httpcore, answered as an httpx.Response (read in full).

    For the hot call of the local backend: httpx's own layers (request building, URL merging,
    cookies, auth, redirects, decoders) were about a third of the gateway's CPU time per line.
    Raises NO_ANSWER's errors, httpcore's (their names match httpx's).
    """
    target, host = _parsed(url)
    content = jsontext.dumps(body).encode()
    answer = await pool.request(
        b"POST",
        target,
        headers=[
            (b"host", host),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            *headers,
        ],
        content=content,
        extensions={"timeout": timeouts(timeout_seconds)},
    )
    return httpx.Response(answer.status, headers=answer.headers, content=answer.content)


@functools.lru_cache(maxsize=256)  # a backend calls a handful of URLs, again and again
def _parsed(url: str) -> tuple[httpcore.URL, bytes]:
    parsed = httpx.URL(url)
    target = httpcore.URL(
        scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path
    )
    return target, parsed.netloc


class Adapter(Protocol):
    """What every backend and channel has: a name to be told apart by, and a close."""

    name: str

    async def close(self) -> None: ...
