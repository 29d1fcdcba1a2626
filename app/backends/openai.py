"""The OpenAI backend adapter: the Files and Batches API over httpx. It never touches the database.

Every call retries 429 (honouring Retry-After), 5xx and connection errors a bounded number of
times (OPENAI_MAX_RETRIES) and then raises BatchAPIError; a 401 or 403 raises AuthRefused at once,
since retrying a refused key only hammers the API. The one exception is the batch create: it is
sent once, and its error says whether OpenAI may have applied it (`outcome_unknown`), because
sending it again could create, and bill, a second batch. The core retries it, after looking for
the batch by its metadata (`list_batches`). Uploads stream from a file on disk and
downloads stream line by line, so no batch file is ever held in memory whole.

Why not the `openai` SDK: its upload reads the whole file into memory and its retries cannot be
bounded and reported per call as the pipeline needs. The tests parse this adapter's counterpart,
the stand-in server, with the SDK's own types, so the contract is the SDK's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import IO, Any

import httpx

from app.backends import calls
from app.backends.base import AuthRefused, BackendStatus, BatchAPIError, ask_models
from app.ground.backends import BackendSpec
from app.ground.config import Settings
from app.net.outbound import RetryPolicy, http_client

PROBE_TIMEOUT_SECONDS = 5.0
COMPLETION_WINDOW = "24h"


class OpenAIBackend:
    """Talks to OPENAI_BASE_URL (the real API or any OpenAI-compatible batch server)."""

    def __init__(self, settings: Settings, spec: BackendSpec | None = None) -> None:
        # Without a spec: the shorthand `openai` backend (OPENAI_BASE_URL, OPENAI_API_KEY, ...).
        spec = spec or settings.shorthand_backends()[1]
        self.name = spec.name
        self.base_url = spec.target.rstrip("/")
        self.retries = RetryPolicy(settings.openai_max_retries, settings.openai_retry_backoff_seconds)
        self.configured = bool(spec.api_key)
        self.key_variable = spec.api_key_env or "OPENAI_API_KEY"
        headers = {}
        if spec.api_key:
            headers["authorization"] = f"Bearer {spec.api_key}"
        if settings.openai_organization:
            headers["openai-organization"] = settings.openai_organization
        if settings.openai_project:
            headers["openai-project"] = settings.openai_project
        timeout = spec.timeout_seconds or settings.openai_timeout_seconds
        self._client = http_client(timeout, base_url=self.base_url, headers=headers)

    async def close(self) -> None:
        await self._client.aclose()

    async def probe(self) -> BackendStatus:
        """One GET /models, no retries: is the API there and does it take our key?"""
        if not self.configured:
            return self._status(False, f"{self.key_variable} is not set")
        response = await ask_models(self, self._client, "/models", PROBE_TIMEOUT_SECONDS, _message)
        if isinstance(response, BackendStatus):
            return response
        if response.status_code >= 400:
            return self._status(False, f"GET /models answered {response.status_code}")
        return self._status(True, "reachable, key accepted")

    def _status(self, reachable: bool, detail: str) -> BackendStatus:
        return BackendStatus(self.name, self.base_url, reachable, detail)

    async def upload(self, file: IO[bytes], filename: str) -> str:
        """POST /files (purpose=batch), streamed from `file`; returns the file id."""

        def body() -> dict[str, Any]:
            file.seek(0)  # a retry sends the file again from the start
            return {"files": {"file": (filename, file, "application/jsonl")}, "data": {"purpose": "batch"}}

        response = await self._call("POST", "/files", body)
        return str(response.json()["id"])

    async def create_batch(
        self, input_file_id: str, endpoint: str, metadata: dict[str, str]
    ) -> dict[str, Any]:
        """POST /batches, sent once (never retried here: a lost answer may hide a created
        batch); returns the batch object. A failure says whether it may have been applied."""
        payload = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": COMPLETION_WINDOW,
            "metadata": metadata,
        }
        response = await self._call("POST", "/batches", lambda: {"json": payload}, retry=False)
        return dict(response.json())

    async def list_batches(self, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        """GET /batches: one page, newest first (`data`, `has_more`, `last_id`), after the
        batch id `after`."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        response = await self._call("GET", "/batches", lambda: {"params": params})
        return dict(response.json())

    async def get_batch(self, remote_id: str) -> dict[str, Any]:
        """GET /batches/{id}."""
        response = await self._call("GET", f"/batches/{remote_id}", dict)
        return dict(response.json())

    async def cancel_batch(self, remote_id: str) -> str:
        """POST /batches/{id}/cancel: "requested", "gone" (404) or "finished" (409: it ended
        before the cancel arrived, and its results are there to collect)."""
        try:
            await self._call("POST", f"/batches/{remote_id}/cancel", dict)
        except BatchAPIError as exc:
            if exc.status == 404:
                return "gone"
            if exc.status == 409:
                return "finished"
            raise
        return "requested"

    async def delete_file(self, file_id: str) -> bool:
        """DELETE /files/{id}; False when it was already gone (404)."""
        try:
            await self._call("DELETE", f"/files/{file_id}", dict)
        except BatchAPIError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def file_lines(self, file_id: str) -> AsyncIterator[str]:
        """The lines of GET /files/{id}/content, streamed. Only the request is retried: a
        failure halfway through raises, and the caller collects the file again later."""
        url = f"/files/{file_id}/content"
        return calls.lines(self._client, url, self.retries, _error_of, f"file {file_id}")

    async def _call(self, method: str, path: str, request: Any, retry: bool = True) -> httpx.Response:
        """One API call, with bounded retries unless `retry` is False; `request()` gives httpx's
        keyword arguments afresh."""
        return await calls.call(
            self._client, self.name, method, path, request, self.retries, _error_of, retry
        )


def _message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return response.text[:300] or response.reason_phrase


def _error_of(response: httpx.Response, what: str = "") -> BatchAPIError:
    try:
        error = response.json().get("error")
        code = error.get("code") if isinstance(error, dict) else None
    except (ValueError, AttributeError):
        code = None
    status = response.status_code
    message = f"{what + ' ' if what else ''}answered {status}: {_message(response)}"
    kind = AuthRefused if status in (401, 403) else BatchAPIError
    # A 5xx may come from a proxy or from OpenAI failing after it acted: the outcome is unknown.
    return kind(
        message,
        status,
        code,
        outcome_unknown=status >= 500,
        retry_after=response.headers.get("retry-after"),
    )
