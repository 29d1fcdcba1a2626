"""What the HTTP faces (api/ and ui/) share: the status each kind of core error answers with,
which error answers tell the batch SDKs not to retry, where a request carries its API key, the
bounds of a row id in a path or a query, and the refusal of paths, queries and bodies that are
not what a route reads (text no database stores, a body that is not JSON)."""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any, NoReturn
from urllib.parse import unquote_to_bytes

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, HTTPException, InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter, QueryParameter
from litestar.types import Scope

from app.core.rules.errors import Problem, TooLarge
from app.db.session import is_unavailable

log = logging.getLogger(__name__)

# A request and a connection as the faces see them: no typed user, auth or state (the app's
# state is read through app.web.state.app_state).
HttpRequest = Request[Any, Any, Any]
Connection = ASGIConnection[Any, Any, Any, Any]

# Row ids are int64 in PostgreSQL: a larger one is refused as bad input before it reaches SQL.
ROW_ID_MAX = 2**63 - 1
RowId = Annotated[int, PathParameter(ge=1, le=ROW_ID_MAX)]
RowCursor = Annotated[int | None, QueryParameter(ge=1, le=ROW_ID_MAX)]
# An admin's list filter: only this team's work ('' for what no team owns). A team's key always
# sees only its own, whatever it asks.
OwnerFilter = Annotated[
    str | None,
    QueryParameter(max_length=50, description="Only this team's work ('' for what no team owns); admin keys"),
]

# The OpenAI and Anthropic SDKs retry 408, 409, 429 and 5xx on their own.
SDK_RETRIED_4XX = frozenset({408, 409, 429})

STATUS_FOR_KIND = {
    "invalid": 422,
    "malformed": 400,
    "conflict": 409,
    "forbidden": 403,
    "not_found": 404,
    "too_large": 413,
    "too_many": 429,
}


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


# What any route of a face can answer, whatever it does (each face in its own error shape).
COMMON_ERRORS = {
    400: "A path or query parameter is not valid (a wrong type or range, not UTF-8, a NUL)",
    401: "No valid API key (only when keys are configured)",
    503: "Database unavailable: nothing was changed, try again",
}


def error_specs(body: type, specific: dict[int, str] | None = None) -> dict[int, ResponseSpec]:
    """A route's documented error answers: COMMON_ERRORS and `specific` (status: description),
    each with the face's error body `body`."""
    described = {**COMMON_ERRORS, **(specific or {})}
    return {status: ResponseSpec(body, description=described[status]) for status in sorted(described)}


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


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case) as Litestar reads it (latin-1), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def check_readable_text(scope: Scope) -> None:
    """Refuse (400) a path or query parameter that is not UTF-8 once percent-decoded or
    holds a NUL. PostgreSQL stores no NUL (the lookup would fail as a 500), and bytes that are
    not UTF-8 would be replaced and quietly name another id."""
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogatepass")
    query: bytes = scope.get("query_string", b"")
    if _plain(raw_path) and _plain(query):
        return  # nearly every request: nothing in it decodes to anything but itself
    pieces = [("path", raw_path)]
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        pieces.append((_decoded(key, "replace"), key + b"=" + value))
    for where, raw in pieces:
        try:
            text = _decoded(raw, "strict")
        except UnicodeDecodeError:
            _refuse(where, "is not valid UTF-8")
        if "\x00" in text:
            _refuse(where, "holds a NUL character (%00)")


def _plain(raw: bytes) -> bool:
    """ASCII with no escape and no NUL: valid UTF-8 and NUL-free however it is decoded."""
    return raw.isascii() and b"%" not in raw and b"\x00" not in raw


def _decoded(raw: bytes, errors: str) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", errors)


def _refuse(where: str, why: str) -> NoReturn:
    detail = f"The {where} {why}." if where == "path" else f"Query parameter {where!r} {why}."
    # `extra` names the parameter the way Litestar's own validation errors do.
    raise ClientException(detail=detail, extra=[{"key": where, "message": why}])


JSON_ONLY = "Send the body as JSON, with Content-Type: application/json."


def require_json(content_type: str | None) -> None:
    """415 unless the body is declared JSON (application/json or a +json type). A request that
    declares nothing is read as JSON, as curl and many clients send it."""
    if not content_type:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(status_code=415, detail=f"{JSON_ONLY} Got {media_type or content_type!r}.")


JSONL_TYPES = frozenset(("application/x-ndjson", "application/jsonl", "application/json-lines"))
JSON_OR_JSONL = (
    "Send a JSON array with Content-Type: application/json, or one request a line with "
    "Content-Type: application/x-ndjson (or application/jsonl)."
)


def json_or_jsonl(content_type: str | None) -> bool:
    """True for a JSONL body, False for JSON (also when nothing is declared, as require_json
    reads it); 415 for anything else."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type in JSONL_TYPES:
        return True
    if not media_type or media_type == "application/json" or media_type.endswith("+json"):
        return False
    raise HTTPException(status_code=415, detail=f"{JSON_OR_JSONL} Got {media_type or content_type!r}.")


async def small_body(request: HttpRequest) -> bytes:
    """The whole body of a route with Litestar's limit (request_max_body_size), refused as
    `request.body()` refuses it (413 when larger, 400 for a Content-Length that is no number, 500
    when the client goes away). Read straight from `receive`: `request.body()` built a Headers
    object for the Content-Length and an async generator per request (6% of intake's CPU)."""
    limit = request.route_handler.resolve_request_max_body_size() or math.inf
    if (announced := header(request.scope, b"content-length")) is not None:
        try:
            too_large = int(announced) > limit
        except ValueError:
            raise ClientException(f"Invalid content-length: {announced!r}") from None
        if too_large:
            raise RequestEntityTooLarge
    chunks, size = [], 0
    while True:
        event = await request.receive()
        if event["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")
        if event["type"] != "http.request":
            continue
        if chunk := event["body"]:
            size += len(chunk)
            if size > limit:
                raise RequestEntityTooLarge
            chunks.append(chunk)
        if not event.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(request: HttpRequest, limit: int, setting: str) -> bytes:
    """The whole body of a route that sets its own limit (its handler says
    request_max_body_size=None): 413 naming `setting` as soon as it is known to be larger."""
    too_large = TooLarge(
        Problem("body_too_large", "Body too large", f"The request body is larger than {setting} allows.")
    )
    if (request.content_length or 0) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
