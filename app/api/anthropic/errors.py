"""Errors of the Anthropic face in Anthropic's shape, {"type": "error", "error": {type, message}}.

These handlers are set on the face's routers only, so the native /api error shape is unchanged.
A refused API key (app.web.auth.KeyRefused, a 401) is Anthropic's authentication_error, as any 401.
Every error a retry cannot fix carries `x-should-retry: false`, which the SDK obeys instead of
retrying on its own (it would otherwise retry 408, 409, 429 and 5xx).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import msgspec
from litestar import Response
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from app.core.rules.errors import BatchgateError, TooMany
from app.formats.anthropic_messages import error_body
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

# A conflict (cancelling an ended batch, deleting one still running) is Anthropic's 400: the
# batch's state, not a race, refuses it, and a 409 would make the SDK retry in vain.
STATUS_FOR_KIND = {**NATIVE_STATUS_FOR_KIND, "invalid": 400, "conflict": 400}


class ErrorDetail(msgspec.Struct):
    type: str
    message: str


class ErrorOut(msgspec.Struct):
    """Anthropic's error body, as the OpenAPI document describes it."""

    error: ErrorDetail
    type: Literal["error"] = "error"


def documented_errors(specific: dict[int, str] | None = None) -> dict[int, ResponseSpec]:
    """The error answers of an Anthropic-face route for the OpenAPI document, in its shape."""
    return error_specs(ErrorOut, specific)


def body_for(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error body for `status`; a 4xx Anthropic names no type for (405, 415, 422) is
    an invalid request, not its catch-all api_error."""
    body = error_body(status, message)
    if 400 <= status < 500 and body["error"]["type"] == "api_error":
        body["error"]["type"] = "invalid_request_error"
    return body


def error_response(status: int, message: str) -> Response[dict[str, Any]]:
    body = body_for(status, message)
    return Response(body, status_code=status, media_type="application/json", headers=no_retry_headers(status))


def _where(pointer: str | None) -> str:
    # "/requests/0/params/max_tokens" reads "requests.0.params.max_tokens", as Anthropic writes it.
    return pointer.strip("/").replace("/", ".") + ": " if pointer else ""


def batchgate_error(_: HttpRequest, exc: BatchgateError) -> Response[dict[str, Any]]:
    message = "; ".join(_where(p.pointer) + p.detail for p in exc.problems)
    response = error_response(STATUS_FOR_KIND.get(exc.kind, 400), message)
    if isinstance(exc, TooMany):
        response.headers["retry-after"] = str(exc.retry_after)
    return response


def http_error(_: HttpRequest, exc: HTTPException) -> Response[dict[str, Any]]:
    message = str(exc.detail)
    if exc.status_code == 413:
        message = "The request body is larger than this endpoint accepts."
    elif isinstance(exc.extra, list) and exc.extra and isinstance(exc.extra[0], dict):
        # A query or path parameter Litestar refused: name it, as Anthropic's messages do.
        message = f"{exc.extra[0].get('key')}: {exc.extra[0].get('message')}"
    response = error_response(exc.status_code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def internal_error(request: HttpRequest, exc: Exception) -> Response[dict[str, Any]]:
    if database_unavailable(request, exc):
        response = error_response(503, UNAVAILABLE_MESSAGE)
        response.headers.update(UNAVAILABLE_HEADERS)
        return response
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "Something went wrong on our side; it has been logged.")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    BatchgateError: batchgate_error,
    HTTPException: http_error,
    Exception: internal_error,
}
