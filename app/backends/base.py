"""What a backend is: the protocols the core drives, and what a backend is given and gives back.

Backends never touch the database. There are two kinds, because running lines and running a
remote batch are different jobs: a `LineRunner` (an inference server: local.py) runs each line
and yields results as they finish; a `BatchAPI` (OpenAI's Files + Batches API: openai.py) takes
a whole input file and is polled until its output files are ready; a `MessageBatchAPI`
(Anthropic's Message Batches: anthropic_batch.py) is created from a request list and its results
are streamed once it has ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO, Any, Literal, Protocol

import httpx

from app.net.outbound import RETRYABLE_STATUS, Adapter, RetryPolicy


class BatchAPIError(Exception):
    """A batch API call that failed for good (after its retries, or at once for a 4xx)."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        *,
        outcome_unknown: bool = False,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        # The request reached the API but its answer did not reach us (a read timeout, a dropped
        # connection, a 5xx): it may have been applied.
        self.outcome_unknown = outcome_unknown
        self.retry_after = retry_after  # the answer's Retry-After header, if it had one

    @property
    def retryable(self) -> bool:
        """Whether trying the same thing later may work (a transient fault, not a refusal)."""
        return self.status is None or self.status in RETRYABLE_STATUS


class AuthRefused(BatchAPIError):
    """401 or 403: the key (or organization/project) is refused; nothing will work until fixed."""


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One request of a batch, as the backend needs it."""

    request_id: int
    custom_id: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LineResult:
    """The outcome of one line: the HTTP response if there was one, an error if it failed.

    Shaped after an OpenAI batch output line: `response` is {status_code, request_id, body}.
    """

    request_id: int
    custom_id: str
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    attempts: int = 1

    @property
    def succeeded(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """Whether a backend answered a cheap request just now (for the dashboard)."""

    name: str
    target: str
    reachable: bool
    detail: str


async def ask_models(
    backend: Backend,
    client: httpx.AsyncClient,
    url: str,
    within: float,
    refused: Callable[[httpx.Response], str],
) -> httpx.Response | BackendStatus:
    """A probe: GET the server's model list once, with a short timeout and no retries. Returns
    the answer, or the backend's status when none came or our key was refused (`refused` says
    why, from the answer)."""
    try:
        response = await client.get(url, timeout=within)
    except httpx.HTTPError as exc:
        return BackendStatus(
            backend.name, backend.base_url, False, f"{type(exc).__name__}: {exc}".rstrip(": ")
        )
    if response.status_code in (401, 403):
        detail = f"refuses our key ({response.status_code}): {refused(response)}"
        return BackendStatus(backend.name, backend.base_url, False, detail)
    return response


class Backend(Adapter, Protocol):
    """What every backend offers besides its name and close: where it points, a cheap probe."""

    base_url: str

    async def probe(self) -> BackendStatus: ...


class LineRunner(Backend, Protocol):
    """A backend that runs a batch's lines itself, N at a time."""

    def run(self, lines: AsyncIterable[BatchLine]) -> AsyncIterator[LineResult]:
        """Take the lines as they come and yield each line's result as soon as it is known, in
        completion order; a failure to read the lines ends the run with that error."""
        ...

    def outage_status(self) -> BackendStatus | None:
        """Unreachable, saying since when, while lines wait for a server that fails every call;
        None otherwise. Known without a probe, so /health shows an outage at once."""
        ...


class BatchAPI(Backend, Protocol):
    """A backend that runs whole batches remotely: upload, create, list, poll, download, cancel,
    delete. `create_batch` is sent once; the core retries it after a lookup (`list_batches`)."""

    configured: bool

    async def upload(self, file: IO[bytes], filename: str) -> str: ...

    async def create_batch(
        self, input_file_id: str, endpoint: str, metadata: dict[str, str]
    ) -> dict[str, Any]: ...

    async def list_batches(self, after: str | None = None, limit: int = 100) -> dict[str, Any]: ...

    async def get_batch(self, remote_id: str) -> dict[str, Any]: ...

    async def cancel_batch(self, remote_id: str) -> str: ...

    async def delete_file(self, file_id: str) -> bool: ...

    def file_lines(self, file_id: str) -> AsyncIterator[str]: ...


class MessageBatchAPI(Backend, Protocol):
    """A backend that runs Anthropic Message Batches: create (from a JSON body on disk), get,
    list, cancel, stream results, delete. `create_batch` is sent once; the core retries it after
    a lookup (`list_batches`)."""

    name: str
    configured: bool
    retries: RetryPolicy  # bounds each call; the core's create loop too

    async def create_batch(self, body: IO[bytes]) -> dict[str, Any]: ...

    async def get_batch(self, remote_id: str) -> dict[str, Any]: ...

    async def list_batches(self, after_id: str | None = None, limit: int = 100) -> dict[str, Any]: ...

    async def cancel_batch(self, remote_id: str) -> str: ...

    async def delete_batch(self, remote_id: str) -> bool: ...

    def result_lines(self, results_url: str) -> AsyncIterator[str]: ...


EmbeddedState = Literal["stopped", "starting", "ready", "failed"]


@dataclass(frozen=True, slots=True)
class EmbeddedStatus:
    """What /health and the dashboard show of the embedded server."""

    state: EmbeddedState
    model: str
    url: str
    detail: str
    pid: int | None
    restarts: int
