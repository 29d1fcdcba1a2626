"""The Anthropic Message Batches adapter over httpx. It never touches the database.

Every call retries 429, 529 (`overloaded_error`), other 5xx and connection errors a bounded number
of times, honouring `retry-after`, then raises BatchAPIError; a 401 or 403 raises AuthRefused at
once. The create is sent once (never retried here): a lost answer may hide a created batch, and
the core looks for it before sending another. The create body streams from a file and results
stream line by line, so no batch is ever held in memory whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import IO, Any

import httpx

from app.backends import calls
from app.backends.base import AuthRefused, BackendStatus, BatchAPIError
from app.net.outbound import RetryPolicy, http_client

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
PROBE_TIMEOUT_SECONDS = 5.0
BATCHES = "/v1/messages/batches"
_CHUNK = 1 << 16


class AnthropicBatchBackend:
    """One Anthropic account (or an Anthropic-compatible batch server), by its own small config."""

    def __init__(
        self,
        name: str,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        *,
        version: str = ANTHROPIC_VERSION,
        timeout_seconds: float = 300.0,
        retries: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.configured = bool(api_key)
        self.retries = retries or RetryPolicy(5, 1.0)
        headers = {"anthropic-version": version}
        if api_key:
            headers["x-api-key"] = api_key
        self._client = http_client(
            timeout_seconds, base_url=self.base_url, headers=headers, transport=transport
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def probe(self) -> BackendStatus:
        """One GET of the batch list (limit 1), no retries: is the API there, does it take our key?"""
        if not self.configured:
            return self._status(False, "no API key is set")
        try:
            response = await self._client.get(BATCHES, params={"limit": 1}, timeout=PROBE_TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            return self._status(False, f"{type(exc).__name__}: {exc}".rstrip(": "))
        if response.status_code in (401, 403):
            return self._status(False, f"refuses our key ({response.status_code}): {_message(response)}")
        if response.status_code >= 400:
            return self._status(False, f"GET {BATCHES} answered {response.status_code}")
        return self._status(True, "reachable, key accepted")

    def _status(self, reachable: bool, detail: str) -> BackendStatus:
        return BackendStatus(self.name, self.base_url, reachable, detail)

    async def create_batch(self, body: IO[bytes]) -> dict[str, Any]:
        """POST /v1/messages/batches with `body` (the JSON `{"requests": [...]}`, streamed from
        a file), sent once; returns the batch. A failure says whether it may have been applied."""

        def request() -> dict[str, Any]:
            body.seek(0)
            return {"content": _chunks(body), "headers": {"content-type": "application/json"}}

        response = await self._call("POST", BATCHES, request, retry=False)
        return dict(response.json())

    async def get_batch(self, remote_id: str) -> dict[str, Any]:
        response = await self._call("GET", f"{BATCHES}/{remote_id}", dict)
        return dict(response.json())

    async def list_batches(self, after_id: str | None = None, limit: int = 100) -> dict[str, Any]:
        """One page of the batches, newest first (`data`, `has_more`, `last_id`); `after_id`
        pages on to older ones."""
        params: dict[str, Any] = {"limit": limit}
        if after_id is not None:
            params["after_id"] = after_id
        response = await self._call("GET", BATCHES, lambda: {"params": params})
        return dict(response.json())

    async def cancel_batch(self, remote_id: str) -> str:
        """ "requested", "gone" (404: no such batch) or "finished" (400/409: it ended before the
        cancel arrived, and its results are there to collect)."""
        try:
            await self._call("POST", f"{BATCHES}/{remote_id}/cancel", dict)
        except BatchAPIError as exc:
            if exc.status == 404:
                return "gone"
            if exc.status in (400, 409):
                return "finished"
            raise
        return "requested"

    async def delete_batch(self, remote_id: str) -> bool:
        """DELETE the ended batch and its results; False when it was already gone (404)."""
        try:
            await self._call("DELETE", f"{BATCHES}/{remote_id}", dict)
        except BatchAPIError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def result_lines(self, results_url: str) -> AsyncIterator[str]:
        """The JSONL lines at `results_url`, streamed. Only the request is retried: a failure
        halfway through raises, and the caller reads the results again later. Our key goes only
        to our own API: a results_url on another origin is refused."""
        target = httpx.URL(results_url)
        if target.is_absolute_url and _origin(target) != _origin(httpx.URL(self.base_url)):
            raise BatchAPIError(f"results_url {results_url} is not on {self.base_url}")
        return calls.lines(self._client, results_url, self.retries, error_of, "results")

    async def _call(
        self, method: str, path: str, request: Callable[[], dict[str, Any]], retry: bool = True
    ) -> httpx.Response:
        return await calls.call(self._client, self.name, method, path, request, self.retries, error_of, retry)


async def _chunks(body: IO[bytes]) -> AsyncIterator[bytes]:
    # A file on local disk: reads are short, and httpx's AsyncClient takes only async bodies.
    while chunk := body.read(_CHUNK):
        yield chunk


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _error(response: httpx.Response) -> dict[str, Any]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _message(response: httpx.Response) -> str:
    return str(_error(response).get("message") or response.text[:300] or response.reason_phrase)


def error_of(response: httpx.Response, what: str) -> BatchAPIError:
    """The answer as an error: `code` is Anthropic's error type (e.g. `overloaded_error`);
    429 and 5xx are retryable (BatchAPIError.retryable), 401/403 raise AuthRefused."""
    status, kind = response.status_code, _error(response).get("type")
    message = f"{what} answered {status}: {_message(response)}"
    error_class = AuthRefused if status in (401, 403) else BatchAPIError
    # A 5xx (529 overloaded_error included) may come after Anthropic acted: the outcome is unknown.
    return error_class(
        message,
        status,
        str(kind) if kind else None,
        outcome_unknown=status >= 500,
        retry_after=response.headers.get("retry-after"),
    )
