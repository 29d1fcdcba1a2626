"""What the HTTP faces (api/ and ui/) share: the status each kind of core error answers with,
which error answers tell the batch SDKs not to retry, where a request carries its API key, and
the bounds of a row id in a path or a query."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from litestar.params import PathParameter, QueryParameter

from app.db.session import is_unavailable

log = logging.getLogger(__name__)

# Row ids are int64 in PostgreSQL: a larger one is refused as bad input before it reaches SQL.
ROW_ID_MAX = 2**63 - 1
RowId = Annotated[int, PathParameter(ge=1, le=ROW_ID_MAX)]
RowCursor = Annotated[int | None, QueryParameter(ge=1, le=ROW_ID_MAX)]

# The OpenAI and Anthropic SDKs retry 408, 409, 429 and 5xx on their own.
SDK_RETRIED_4XX = frozenset({408, 409, 429})

STATUS_FOR_KIND = {"invalid": 422, "malformed": 400, "conflict": 409, "not_found": 404, "too_large": 413}


def no_retry_headers(status: int) -> dict[str, str]:
    """`x-should-retry: false` on an error a retry cannot fix, so the SDKs do not send it again."""
    return {"x-should-retry": "false"} if 400 <= status < 500 and status not in SDK_RETRIED_4XX else {}


def presented_keys(authorization: str | None, x_api_key: str | None) -> list[str]:
    """The API keys a request carries: `Authorization: Bearer <key>` (the OpenAI SDK, curl) and
    `x-api-key: <key>` (the Anthropic SDK). Another scheme in Authorization is no key."""
    keys: list[str] = []
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            keys.append(credentials.strip())
    if x_api_key and x_api_key.strip():
        keys.append(x_api_key.strip())
    return keys


# An error that is the database being unreachable for now is a 503 to try again, not a 500.
UNAVAILABLE_MESSAGE = "The database is unavailable right now; nothing was changed. Try again shortly."
UNAVAILABLE_HEADERS = {"retry-after": "5"}


def database_unavailable(request: Any, exc: BaseException) -> bool:
    """True (and logged once, as a warning) when an unexpected error on `request` is the database
    being unreachable or overloaded: the face answers 503 with UNAVAILABLE_HEADERS."""
    if not is_unavailable(exc):
        return False
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return True
