"""What the batch API adapters share: one call with bounded retries, and a body streamed line by
line. Each adapter says how an error answer reads (`error_of`): the APIs' envelopes differ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from app.backends.base import BatchAPIError
from app.ground import metrics
from app.net.outbound import RetryPolicy

ErrorOf = Callable[[httpx.Response, str], BatchAPIError]


async def call(
    client: httpx.AsyncClient,
    label: str,
    method: str,
    path: str,
    request: Callable[[], dict[str, Any]],
    policy: RetryPolicy,
    error_of: ErrorOf,
    retry: bool = True,
) -> httpx.Response:
    """One API call, with bounded retries unless `retry` is False; `request()` gives httpx's
    keyword arguments afresh for each try (a body file is read again from its start)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            with metrics.backend_call(label) as outcome:
                response = await client.request(method, path, **request())
                outcome[0] = "ok" if response.is_success else "error"
        except httpx.TransportError as exc:
            # Only a connection never made is sure not to have reached the API.
            unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
            error = BatchAPIError(f"{method} {path}: {type(exc).__name__}: {exc}", outcome_unknown=not unsent)
        else:
            if response.is_success:
                return response
            error = error_of(response, f"{method} {path}")
        if not (retry and error.retryable and policy.allows(attempt)):
            raise error
        await asyncio.sleep(policy.wait(attempt, error.retry_after))


async def lines(
    client: httpx.AsyncClient, url: str, policy: RetryPolicy, error_of: ErrorOf, what: str
) -> AsyncIterator[str]:
    """The non-blank lines of GET `url`, streamed. Only the request is retried: a failure
    halfway through raises, and the caller reads the whole again later."""
    attempt, started = 0, False
    while True:
        attempt += 1
        try:
            async with client.stream("GET", url) as response:
                if response.is_success:
                    async for line in response.aiter_lines():
                        if line.strip():
                            started = True
                            yield line
                    return
                await response.aread()
                error = error_of(response, f"GET {what}")
        except httpx.TransportError as exc:
            error = BatchAPIError(f"reading {what}: {type(exc).__name__}: {exc}")
            if started:
                raise error from exc
        if not (error.retryable and policy.allows(attempt)):
            raise error
        await asyncio.sleep(policy.wait(attempt, error.retry_after))
