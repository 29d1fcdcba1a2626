"""What a backend is given and what it gives back. Backends never touch the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
