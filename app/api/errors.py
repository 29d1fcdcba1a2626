"""Every error answer has one shape: {"errors": [{code, title, detail, source: {pointer}}]}."""

from __future__ import annotations

import logging

from litestar import Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from app.api.schemas import ErrorBody, ErrorItem, error_item
from app.core.rules.errors import BatchgateError, TooMany
from app.web.http import (
    STATUS_FOR_KIND,
    UNAVAILABLE_HEADERS,
    UNAVAILABLE_MESSAGE,
    HttpRequest,
    database_unavailable,
    error_specs,
)
from app.web.protection import malformed_host

log = logging.getLogger(__name__)


CODE_FOR_STATUS = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("body_too_large", "Body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("rate_limited", "Too many requests"),
}


def documented_errors(specific: dict[int, str] | None = None) -> dict[int, ResponseSpec]:
    """The error answers of a native route for its OpenAPI document, in the {"errors": [...]}
    shape: COMMON_ERRORS and `specific` (status: description)."""
    return error_specs(ErrorBody, specific)


def error_response(status: int, items: list[ErrorItem]) -> Response[ErrorBody]:
    return Response(ErrorBody(errors=items), status_code=status, media_type="application/json")


def batchgate_error(_: HttpRequest, exc: BatchgateError) -> Response[ErrorBody]:
    response = error_response(STATUS_FOR_KIND.get(exc.kind, 400), [error_item(p) for p in exc.problems])
    if isinstance(exc, TooMany):
        response.headers["retry-after"] = str(exc.retry_after)
    return response


def http_error(_: HttpRequest, exc: HTTPException) -> Response[ErrorBody]:
    code, title = CODE_FOR_STATUS.get(exc.status_code, ("error", "Error"))
    detail = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        # Say what failed where (msgspec's words, e.g. "Expected `int` >= 1 - at `$.concurrency`").
        said = [
            str(item.get("message")) for item in exc.extra if isinstance(item, dict) and item.get("message")
        ]
        detail = "; ".join([detail, *said][:4])
    if exc.status_code == 413:
        detail = "The request body is larger than API_MAX_BODY_BYTES allows."
    response = error_response(exc.status_code, [ErrorItem(code, title, detail)])
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _said(item: dict[str, object]) -> str:
    """One validation failure as msgspec and Litestar report it: the message, and where."""
    key = item.get("key")
    return f"{item['message']} (at {key})" if key else str(item["message"])


def internal_error(request: HttpRequest, exc: Exception) -> Response[ErrorBody]:
    if (why := malformed_host(request.headers.get("host", ""))) is not None:
        # Raised where the URL was built, before the screen (ScreenRequests) could refuse it.
        return error_response(400, [ErrorItem("bad_request", "Bad request", f"Bad Host header: {why}.")])
    if database_unavailable(request, exc):
        unavailable = ErrorItem("database_unavailable", "Database unavailable", UNAVAILABLE_MESSAGE)
        response = error_response(503, [unavailable])
        response.headers.update(UNAVAILABLE_HEADERS)
        return response
    log.exception("unhandled error on %s %s", request.method, request.scope["path"], exc_info=exc)
    item = ErrorItem(
        "internal_error", "Internal error", "Something went wrong on our side; it has been logged."
    )
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, [item])


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    BatchgateError: batchgate_error,
    HTTPException: http_error,
    Exception: internal_error,
}
