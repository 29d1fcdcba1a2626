"""Errors core raises; faces turn them into HTTP answers or broker rejections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input: a machine code, a title, a human detail and where."""

    code: str
    title: str
    detail: str
    pointer: str | None = None


class BatchgateError(Exception):
    """Base of the errors core raises on purpose."""

    kind = "error"

    def __init__(self, *problems: Problem) -> None:
        super().__init__("; ".join(p.detail for p in problems))
        self.problems = list(problems)


class InvalidInput(BatchgateError):
    """The input breaks the schema or a rule (HTTP 422)."""

    kind = "invalid"


class MalformedInput(BatchgateError):
    """The input is not even JSON (HTTP 400)."""

    kind = "malformed"


class Conflict(BatchgateError):
    """The input is fine but collides with the current state (HTTP 409)."""

    kind = "conflict"


class TooLarge(BatchgateError):
    """The input is larger than this endpoint accepts (HTTP 413)."""

    kind = "too_large"


class TooMany(BatchgateError):
    """Fine, but too often just now (HTTP 429): `retry_after` seconds until it may be done."""

    kind = "too_many"

    def __init__(self, retry_after: int, *problems: Problem) -> None:
        super().__init__(*problems)
        self.retry_after = retry_after


class Forbidden(BatchgateError):
    """The caller's key may not do this (HTTP 403): a team's key asking for an admin's action."""

    kind = "forbidden"


class NotFound(BatchgateError):
    """No such thing (HTTP 404)."""

    kind = "not_found"


def found(row: T | None, what: str, ident: object) -> T:
    """`row`, or NotFound when there is none: `batch = found(await session.get(...), "batch", id)`."""
    if row is None:
        raise not_found(what, ident)
    return row


def not_found(what: str, ident: object) -> NotFound:
    return NotFound(Problem("not_found", f"{what.capitalize()} not found", f"No {what} with id {ident!r}."))
