"""Errors in OpenAI's shape, {"error": {message, type, param, code}}, for the OpenAI face only
(its routers carry these handlers, so the native /api error shape stays as it is)."""

from __future__ import annotations

import logging

import msgspec
from litestar import Response
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from app.core.rules.errors import BatchgateError, InvalidInput, Problem, TooMany
from app.web.auth import KeyRefused
from app.web.http import STATUS_FOR_KIND as NATIVE_STATUS_FOR_KIND
from app.web.http import (
    UNAVAILABLE_HEADERS,
    UNAVAILABLE_MESSAGE,
    HttpRequest,
    database_unavailable,
    error_specs,
    no_retry_headers,
)

log = logging.getLogger(__name__)

# OpenAI answers every 4xx input problem with 400, where the native API says 422.
STATUS_FOR_KIND = {**NATIVE_STATUS_FOR_KIND, "invalid": 400}
TYPE_FOR_STATUS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_exceeded"}


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorOut(msgspec.Struct):
    error: ErrorDetail


def documented_errors(specific: dict[int, str] | None = None) -> dict[int, ResponseSpec]:
    """The error answers of an OpenAI-face route for the OpenAPI document, in OpenAI's shape."""
    return error_specs(ErrorOut, specific)


def invalid(code: str, message: str, param: str | None = None) -> BatchgateError:
    """A 400 invalid_request_error about `param`, raised by the face's own checks."""
    return InvalidInput(Problem(code, "Invalid request", message, param))


def answer(
    status: int, message: str, code: str | None, param: str | None = None, kind: str | None = None
) -> Response[ErrorOut]:
    """OpenAI's error answer; `kind` (its `type`) follows from the status unless given."""
    if kind is None:
        kind = "server_error" if status >= 500 else TYPE_FOR_STATUS.get(status, "invalid_request_error")
    return Response(
        ErrorOut(ErrorDetail(message, kind, param, code)),
        status_code=status,
        headers=no_retry_headers(status),
        media_type="application/json",
    )


def core_error(_: HttpRequest, exc: BatchgateError) -> Response[ErrorOut]:
    first = exc.problems[0] if exc.problems else Problem("error", "Error", str(exc))
    message = " ".join(p.detail for p in exc.problems) or str(exc)
    response = answer(STATUS_FOR_KIND.get(exc.kind, 400), message, first.code, first.pointer)
    if isinstance(exc, TooMany):
        response.headers["retry-after"] = str(exc.retry_after)
    return response


def http_error(_: HttpRequest, exc: HTTPException) -> Response[ErrorOut]:
    message = exc.detail
    if exc.status_code == 413:
        message = "The request body is larger than this endpoint accepts."
    elif isinstance(exc.extra, list) and exc.extra:
        # A query or path parameter Litestar refused: name it, as OpenAI's `param` does.
        first = exc.extra[0]
        if isinstance(first, dict):
            message = f"{first.get('key')}: {first.get('message')}"
            return answer(exc.status_code, message, "invalid_value", str(first.get("key")))
    return answer(exc.status_code, message, None)


def key_refused(_: HttpRequest, exc: KeyRefused) -> Response[ErrorOut]:
    # What OpenAI itself answers for a missing or wrong key (and what its SDKs expect).
    response = answer(401, exc.detail, "invalid_api_key", kind="invalid_request_error")
    response.headers.update(exc.headers or {})
    return response


def internal_error(request: HttpRequest, exc: Exception) -> Response[ErrorOut]:
    if database_unavailable(request, exc):
        response = answer(503, UNAVAILABLE_MESSAGE, "database_unavailable")
        response.headers.update(UNAVAILABLE_HEADERS)
        return response
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return answer(500, "Something went wrong on our side; it has been logged.", "internal_error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    BatchgateError: core_error,
    KeyRefused: key_refused,
    HTTPException: http_error,
    Exception: internal_error,
}
