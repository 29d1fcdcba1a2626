"""Stand-in for the OpenAI Files + Batches API (``/v1/files``, ``/v1/batches``, ``/v1/models``).

Plain ASGI, no framework. The batch state machine moves only when a test
retrieves the batch (``GET /v1/batches/{id}``), never on wall-clock time, so
every scenario is deterministic. Switches are plain attributes that tests
mutate between requests; recordings are plain lists and dicts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import Message as _MimeHeaders
from email.parser import BytesHeaderParser
from typing import Any
from urllib.parse import parse_qs

from testkit.standins import answers
from testkit.standins.answers import error_body
from testkit.standins.asgi import (
    Message,
    Receive,
    Scope,
    Send,
    lifespan,
    read_body,
    request_headers,
    send_bytes,
    send_json,
)
from testkit.standins.asgi import last_user_text as _last_user_text
from testkit.standins.asgi import text_of as _text

ENDPOINTS: tuple[str, ...] = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/moderations",
)
COMPLETION_WINDOW_SECONDS = 24 * 3600
# Files uploaded with purpose=batch expire after 30 days unless expires_after says otherwise.
BATCH_FILE_TTL_SECONDS = 30 * 24 * 3600
MALFORMED_CHARS = 40
MODEL_ID = "gpt-4o-mini"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# Which input-line field a scenario validation code blames, as the real service reports it.
_PARAM_FOR_CODE: dict[str, str | None] = {
    "invalid_url": "url",
    "duplicate_custom_id": "custom_id",
    "missing_required_parameter": "custom_id",
    "model_not_found": "body.model",
    "streaming_unsupported": "body.stream",
    "invalid_request": "body",
    "invalid_json_line": None,
}

Json = dict[str, Any]
Handler = Callable[..., Awaitable[None]]


class _ApiError(Exception):
    """Raised by handlers; turned into an OpenAI error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, type_, param, code)


@dataclass
class _Line:
    """One validated input line."""

    number: int
    custom_id: str
    body: Json


@dataclass
class _Run:
    """Private bookkeeping for one batch; the public object lives in ``batches``."""

    scenario: Json
    polls_in_status: int = 0
    lines: list[_Line] | None = None
    cancel_by_client: bool = False
    late_polls_left: int = 0


@dataclass
class _Part:
    """One multipart/form-data field."""

    content: bytes
    filename: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def parse_multipart(content_type: str, body: bytes) -> dict[str, _Part]:
    """Split a multipart/form-data body into named fields (later duplicates win).

    Splits on CRLF + "--boundary" (RFC 2046), so file bytes come back exact,
    CRLFs and non-ASCII included.
    """
    ctype = _MimeHeaders()
    ctype["content-type"] = content_type
    boundary = ctype.get_param("boundary")
    if ctype.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        raise _ApiError(400, "Expected a multipart/form-data body with a boundary.")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    segments = (b"\r\n" + body).split(delimiter)
    fields: dict[str, _Part] = {}
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            break
        _, _, rest = segment.partition(b"\r\n")  # transport padding after the delimiter
        raw_headers, sep, content = rest.partition(b"\r\n\r\n")
        if not sep:
            raise _ApiError(400, "Malformed multipart/form-data part.")
        headers = BytesHeaderParser().parsebytes(raw_headers + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        fields[name] = _Part(
            content=content,
            filename=headers.get_filename(),
            headers={k.lower(): str(v) for k, v in headers.items()},
        )
    return fields


class OpenAIBatchStandin:
    """Plain ASGI app speaking the OpenAI Files + Batches API, with failure switches.

    Request pipeline: record the call, ``required_api_key`` (401), ``forbidden``
    (403), ``fail_next`` (not for GET /v1/models), ``fail_matching``, then the route.
    ``lost_create_answers`` lets a create succeed and then loses its answer (see there);
    ``answer_delays`` and ``content_line_delay`` make answers late and downloads slow.

    Batches move only on ``GET /v1/batches/{id}``: ``polls_per_status`` GETs show
    each of validating, in_progress and finalizing, then the final status. The
    input file is validated when leaving validating; all lines run when the final
    status is reached. Per-batch scenarios come from ``next_batches`` (one dict
    popped per create): ``fail_validation`` {custom_id: code | {code, param,
    message}}, ``error_code``, ``expire_after`` N, ``cancel_after`` N,
    ``late_output_polls`` N, ``malformed`` [custom_id, ...].
    """

    def __init__(self) -> None:
        # Transport / auth switches.
        self.required_api_key: str | None = None  # 401 unless "Authorization: Bearer <key>"
        self.forbidden: bool = False  # 403 on every route
        self.fail_next: list[int] = []  # statuses popped one per call (GET /v1/models exempt)
        self.retry_after: str | None = None  # retry-after header on fail_next answers
        # Regex fullmatched against "METHOD /path" -> statuses popped one per matching call, so a
        # failure can aim at one route (e.g. {r"POST /v1/batches/.+/cancel": [409]}).
        self.fail_matching: dict[str, list[int]] = {}
        # One popped per accepted POST /v1/batches: the batch is created (and would be billed),
        # then its answer is lost. "timeout": no answer until the client hangs up; "disconnect":
        # the connection closes halfway through the answer; "500": answers 500; "hold": no answer
        # until `release_held` is set (then the usual one) or the client hangs up.
        self.lost_create_answers: list[str] = []
        self.release_held = asyncio.Event()
        # State-machine switches.
        self.polls_per_status: int = 1  # GETs showing each non-final status (0: straight to final)
        self.cancelling_polls: int = 1  # GETs showing "cancelling" after a client cancel
        self.cancel_partial_lines: int = 0  # lines with results when a client cancel lands
        self.next_batches: list[Json] = []  # scenario per created batch, popped in order
        self.line_statuses: dict[str, list[int]] = {}  # custom_id -> statuses, popped per execution
        self.usage_for: dict[str, Json] = {}  # custom_id -> usage its output line reports instead
        self.reverse_output: bool = False  # write result lines in reverse input order
        self.endpoints: tuple[str, ...] = ENDPOINTS  # accepted batch endpoints
        self.clock: Callable[[], float] = time.time  # source of every *_at timestamp
        # Slowness, to widen a moment a test kills the client in. Regex fullmatched against
        # "METHOD /path" -> seconds its answer is held after the route acted (an upload is
        # stored, a create applied); and file content sent one line at a time, this far apart.
        self.answer_delays: dict[str, float] = {}
        self.content_line_delay: float = 0.0

        # Recordings (cleared by reset()).
        self.calls: list[tuple[str, str]] = []  # (method, path) of every request
        self.call_headers: list[dict[str, str]] = []  # lower-cased headers, parallel to calls
        self.call_times: list[float] = []  # time.monotonic() of each call's arrival, parallel to calls
        self.uploads: list[Json] = []  # {headers, size, chunked, file_id, filename} per POST /v1/files
        self.created: list[Json] = []  # JSON body of every POST /v1/batches, accepted or not
        self.deleted_files: list[str] = []  # file ids removed by DELETE /v1/files/{id}
        self.executed: list[tuple[str, str]] = []  # (batch_id, custom_id) per executed line

        # Stored state (kept by reset()).
        self.files: dict[str, bytes] = {}  # file id -> content (inputs, outputs, error files)
        self.file_objects: dict[str, Json] = {}  # file id -> FileObject JSON
        self.batches: dict[str, Json] = {}  # batch id -> true Batch JSON (file ids never hidden)
        self.results: dict[str, dict[str, Json]] = {}  # batch id -> custom_id -> record written

        self._runs: dict[str, _Run] = {}
        self._ids = itertools.count(1)
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(r"/v1/files"), self._upload),
            ("GET", re.compile(r"/v1/files"), self._list_files),
            ("GET", re.compile(r"/v1/files/(?P<file_id>[^/]+)"), self._get_file),
            ("DELETE", re.compile(r"/v1/files/(?P<file_id>[^/]+)"), self._delete_file),
            ("GET", re.compile(r"/v1/files/(?P<file_id>[^/]+)/content"), self._file_content),
            ("POST", re.compile(r"/v1/batches"), self._create_batch),
            ("GET", re.compile(r"/v1/batches"), self._list_batches),
            ("GET", re.compile(r"/v1/batches/(?P<batch_id>[^/]+)"), self._retrieve_batch),
            ("POST", re.compile(r"/v1/batches/(?P<batch_id>[^/]+)/cancel"), self._cancel_batch),
            ("GET", re.compile(r"/v1/models"), self._models),
        ]

    def reset(self) -> None:
        """Forget recordings; keep switches and the stored files and batches."""
        self.calls.clear()
        self.call_headers.clear()
        self.call_times.clear()
        self.uploads.clear()
        self.created.clear()
        self.deleted_files.clear()
        self.executed.clear()

    def output_lines(self, file_id: str | None) -> list[Json]:
        """Parse a stored JSONL file (skipping lines the ``malformed`` scenario broke)."""
        if file_id is None:
            return []
        parsed: list[Json] = []
        for line in self.files[file_id].decode().splitlines():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                continue
        return parsed

    # ------------------------------------------------------------------ plumbing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        headers = request_headers(scope)
        raw = await read_body(receive)
        self.calls.append((method, path))
        self.call_headers.append(headers)
        self.call_times.append(time.monotonic())
        extra = {"x-request-id": self._new_id("req_", 24)}
        send = self._held(send, f"{method} {path}")
        try:
            await self._dispatch(_Request(scope, headers, raw, send, extra, receive), method, path)
        except _ApiError as exc:
            await send_json(send, exc.status, exc.body, extra)

    def _held(self, send: Send, call: str) -> Send:
        """`send`, holding back the answer's start as `answer_delays` says for `call`."""
        delay = next((d for pattern, d in self.answer_delays.items() if re.fullmatch(pattern, call)), 0.0)
        if delay <= 0:
            return send

        async def held(message: Message) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(delay)  # the route has acted; its answer is late
            await send(message)

        return held

    async def _dispatch(self, request: _Request, method: str, path: str) -> None:
        headers, extra = request.headers, request.extra
        expected = f"Bearer {self.required_api_key}"
        if self.required_api_key is not None and headers.get("authorization") != expected:
            raise _ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        if self.forbidden:
            raise _ApiError(403, "You are not allowed to access this resource.")
        if self.fail_next and not (method == "GET" and path == "/v1/models"):
            status = self.fail_next.pop(0)
            if self.retry_after is not None:
                extra["retry-after"] = self.retry_after
            if status == 429:
                raise _ApiError(429, "Rate limit reached.", type_="requests", code="rate_limit_exceeded")
            if status >= 500:
                raise _ApiError(status, "The server had an error.", type_="server_error")
            raise _ApiError(status, f"stand-in status {status}")
        for pattern, statuses in self.fail_matching.items():
            if statuses and re.fullmatch(pattern, f"{method} {path}"):
                status = statuses.pop(0)
                if self.retry_after is not None:
                    extra["retry-after"] = self.retry_after
                if status >= 500:
                    raise _ApiError(status, "The server had an error.", type_="server_error")
                raise _ApiError(status, f"stand-in status {status}")

        allowed: list[str] = []
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            await handler(request, **match.groupdict())
            return
        if allowed:
            extra["allow"] = ", ".join(allowed)
            raise _ApiError(405, f"Method {method} not allowed on {path}.")
        raise _ApiError(404, f"Invalid URL ({method} {path})")

    def _new_id(self, prefix: str, width: int) -> str:
        """Unique, deterministic per instance; shaped like the real ids (prefix + hex)."""
        return f"{prefix}{next(self._ids):0{width}x}"

    def _now(self) -> int:
        return int(self.clock())

    # ------------------------------------------------------------------ files

    async def _upload(self, request: _Request) -> None:
        fields = parse_multipart(request.headers.get("content-type", ""), request.raw)
        chunked = (
            "chunked" in request.headers.get("transfer-encoding", "").lower()
            or "content-length" not in request.headers
        )
        upload: Json = {"headers": request.headers, "size": 0, "chunked": chunked, "file_id": None}
        self.uploads.append(upload)
        purpose = fields.get("purpose")
        if purpose is None:
            raise _ApiError(400, "Missing required parameter: 'purpose'.", param="purpose")
        if purpose.content != b"batch":
            raise _ApiError(
                400,
                f"Invalid value for 'purpose': {purpose.content.decode(errors='replace')!r}. "
                "This stand-in only supports 'batch'.",
                param="purpose",
                code="invalid_value",
            )
        part = fields.get("file")
        if part is None:
            raise _ApiError(400, "Missing required parameter: 'file'.", param="file")
        created_at = self._now()
        expires_at = created_at + BATCH_FILE_TTL_SECONDS
        if "expires_after[seconds]" in fields:
            try:
                seconds = int(fields["expires_after[seconds]"].content)
            except ValueError:
                seconds = -1
            if not 3600 <= seconds <= 30 * 24 * 3600:
                raise _ApiError(400, "Invalid 'expires_after.seconds'.", param="expires_after.seconds")
            expires_at = created_at + seconds
        obj = self._store_file(part.content, part.filename or "upload.jsonl", "batch", created_at, expires_at)
        upload.update(size=len(part.content), file_id=obj["id"], filename=obj["filename"])
        await send_json(request.send, 200, obj, request.extra)

    def _store_file(
        self, data: bytes, filename: str, purpose: str, created_at: int, expires_at: int | None
    ) -> Json:
        file_id = self._new_id("file-", 22)
        obj: Json = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": created_at,
            "expires_at": expires_at,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        self.files[file_id] = data
        self.file_objects[file_id] = obj
        return obj

    def _file(self, file_id: str) -> Json:
        obj = self.file_objects.get(file_id)
        if obj is None:
            raise _ApiError(404, f"No such File object: {file_id}", param="id")
        return obj

    async def _list_files(self, request: _Request) -> None:
        query = parse_qs(request.scope.get("query_string", b"").decode())
        purpose = query.get("purpose", [None])[0]
        data = [obj for obj in reversed(self.file_objects.values()) if purpose in (None, obj["purpose"])]
        page = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": False,
        }
        await send_json(request.send, 200, page, request.extra)

    async def _get_file(self, request: _Request, file_id: str) -> None:
        await send_json(request.send, 200, self._file(file_id), request.extra)

    async def _file_content(self, request: _Request, file_id: str) -> None:
        self._file(file_id)
        data = self.files[file_id]
        if self.content_line_delay <= 0:
            await send_bytes(request.send, 200, data, "application/octet-stream", request.extra)
            return
        # A slow download: the length up front, then one line at a time.
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(data))]
        headers += [(k.encode(), v.encode()) for k, v in request.extra.items()]
        await request.send({"type": "http.response.start", "status": 200, "headers": headers})
        for line in data.splitlines(keepends=True):
            await request.send({"type": "http.response.body", "body": line, "more_body": True})
            await asyncio.sleep(self.content_line_delay)
        await request.send({"type": "http.response.body", "body": b""})

    async def _delete_file(self, request: _Request, file_id: str) -> None:
        self._file(file_id)
        del self.file_objects[file_id]
        del self.files[file_id]
        self.deleted_files.append(file_id)
        await send_json(request.send, 200, {"id": file_id, "object": "file", "deleted": True}, request.extra)

    # ------------------------------------------------------------------ batches

    async def _create_batch(self, request: _Request) -> None:
        try:
            body = json.loads(request.raw) if request.raw else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _ApiError(400, "We could not parse the JSON body of your request.")
        self.created.append(body)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if name not in body:
                raise _ApiError(
                    400,
                    f"Missing required parameter: '{name}'.",
                    param=name,
                    code="missing_required_parameter",
                )
        endpoint = body["endpoint"]
        if endpoint not in self.endpoints:
            supported = ", ".join(f"'{e}'" for e in self.endpoints)
            raise _ApiError(
                400,
                f"Invalid value: '{endpoint}'. Supported values are: {supported}.",
                param="endpoint",
                code="invalid_value",
            )
        if body["completion_window"] != "24h":
            raise _ApiError(
                400,
                f"Invalid value: '{body['completion_window']}'. Supported values are: '24h'.",
                param="completion_window",
                code="invalid_value",
            )
        input_file = self.file_objects.get(str(body["input_file_id"]))
        if input_file is None or input_file["purpose"] != "batch":
            raise _ApiError(400, f"No such File object: {body['input_file_id']}", param="input_file_id")
        metadata = body.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict) or len(metadata) > 16:
                raise _ApiError(400, "Invalid 'metadata'.", param="metadata", code="invalid_type")
            for key, value in metadata.items():
                if not isinstance(value, str):
                    raise _ApiError(
                        400,
                        f"Invalid type for 'metadata.{key}': expected a string.",
                        param=f"metadata.{key}",
                        code="invalid_type",
                    )

        batch_id = self._new_id("batch_", 32)
        created_at = self._now()
        batch: Json = {
            "id": batch_id,
            "object": "batch",
            "endpoint": endpoint,
            "model": None,
            "errors": None,
            "input_file_id": input_file["id"],
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": created_at,
            "in_progress_at": None,
            "expires_at": created_at + COMPLETION_WINDOW_SECONDS,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata,
            "usage": None,
        }
        scenario = self.next_batches.pop(0) if self.next_batches else {}
        self.batches[batch_id] = batch
        self._runs[batch_id] = _Run(scenario=dict(scenario))
        if self.lost_create_answers and not await self._lose_answer(request, self.lost_create_answers.pop(0)):
            return
        await send_json(request.send, 200, self._view(batch_id, consume=False), request.extra)

    async def _lose_answer(self, request: _Request, fault: str) -> bool:
        """Lose the answer of a create already applied, as `fault` says; True when the usual
        answer is to be sent after all (a held answer released while the client waits)."""
        if fault == "500":
            raise _ApiError(500, "The server had an error.", type_="server_error")
        if fault == "disconnect":
            start = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
            await request.send({"type": "http.response.start", "status": 200, "headers": start})
            await request.send({"type": "http.response.body", "body": b'{"id": "batch_', "more_body": True})
            return False  # the server closes a connection whose answer was left unfinished
        hung_up = asyncio.ensure_future(_disconnected(request.receive))
        released = asyncio.ensure_future(self.release_held.wait())
        waits = {hung_up} if fault == "timeout" else {hung_up, released}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        client_left = hung_up.done()
        hung_up.cancel()
        released.cancel()
        return not client_left

    def _batch(self, batch_id: str) -> Json:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise _ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    async def _retrieve_batch(self, request: _Request, batch_id: str) -> None:
        self._batch(batch_id)
        self._advance(batch_id)
        await send_json(request.send, 200, self._view(batch_id, consume=True), request.extra)

    async def _list_batches(self, request: _Request) -> None:
        query = parse_qs(request.scope.get("query_string", b"").decode())
        try:
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            raise _ApiError(400, "'limit' must be between 1 and 100.", param="limit", code="invalid_value")
        ids = list(reversed(self.batches))  # newest first, like the real listing
        after = query.get("after", [None])[0]
        if after in ids:
            ids = ids[ids.index(after) + 1 :]
        page = ids[:limit]
        data = [self._view(batch_id, consume=False) for batch_id in page]
        await send_json(
            request.send,
            200,
            {
                "object": "list",
                "data": data,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
                "has_more": len(ids) > limit,
            },
            request.extra,
        )

    async def _cancel_batch(self, request: _Request, batch_id: str) -> None:
        batch = self._batch(batch_id)
        if batch["status"] in {"completed", "failed", "expired"}:
            # Real service: 409 for these; cancelling an already cancelled batch is allowed.
            raise _ApiError(409, f"Cannot cancel a batch with status '{batch['status']}'.")
        if batch["status"] not in {"cancelling", "cancelled"}:
            run = self._runs[batch_id]
            run.cancel_by_client = True
            self._enter(batch_id, "cancelling")
        await send_json(request.send, 200, self._view(batch_id, consume=False), request.extra)

    async def _models(self, request: _Request) -> None:
        model = {"id": MODEL_ID, "object": "model", "created": 1721172741, "owned_by": "system"}
        await send_json(request.send, 200, {"object": "list", "data": [model]}, request.extra)

    # ------------------------------------------------------------------ state machine

    def _budget(self, batch_id: str, status: str) -> int:
        """How many GETs show ``status`` before the batch moves on."""
        if status == "cancelling":
            return self.cancelling_polls if self._runs[batch_id].cancel_by_client else 1
        return max(0, self.polls_per_status)

    def _next_status(self, batch_id: str, status: str) -> str:
        run = self._runs[batch_id]
        if status == "validating":
            return "in_progress" if self._validate(batch_id) else "failed"
        if status == "in_progress":
            return "cancelling" if "cancel_after" in run.scenario else "finalizing"
        if status == "finalizing":
            return "expired" if "expire_after" in run.scenario else "completed"
        return "cancelled"  # from cancelling

    def _advance(self, batch_id: str) -> None:
        """One GET's worth of progress; skips statuses whose budget is already used up."""
        batch, run = self.batches[batch_id], self._runs[batch_id]
        if batch["status"] in TERMINAL:
            return
        run.polls_in_status += 1
        while batch["status"] not in TERMINAL and run.polls_in_status > self._budget(
            batch_id, batch["status"]
        ):
            self._enter(batch_id, self._next_status(batch_id, batch["status"]))
            run.polls_in_status = 1

    def _enter(self, batch_id: str, status: str) -> None:
        batch, run = self.batches[batch_id], self._runs[batch_id]
        batch["status"] = status
        batch[f"{status}_at"] = self._now()
        run.polls_in_status = 0
        lines = run.lines or []
        if status == "completed":
            self._finish(batch_id, executed=len(lines), expired=False)
        elif status == "expired":
            self._finish(batch_id, executed=int(run.scenario["expire_after"]), expired=True)
        elif status == "cancelled":
            partial = self.cancel_partial_lines if run.cancel_by_client else int(run.scenario["cancel_after"])
            self._finish(batch_id, executed=partial if run.lines is not None else 0, expired=False)

    def _view(self, batch_id: str, *, consume: bool) -> Json:
        """The batch as the API shows it (``late_output_polls`` hides the file ids for a while)."""
        view = dict(self.batches[batch_id])
        run = self._runs[batch_id]
        if run.late_polls_left > 0:
            view["output_file_id"] = None
            view["error_file_id"] = None
            if consume:
                run.late_polls_left -= 1
        return view

    # ------------------------------------------------------------------ validation

    def _validate(self, batch_id: str) -> bool:
        """Parse the input file into lines; on any error fill ``errors`` and return False."""
        batch, run = self.batches[batch_id], self._runs[batch_id]
        errors: list[Json] = []
        data = self.files.get(batch["input_file_id"])
        if data is None:
            errors.append(
                _batch_error(
                    "invalid_request", None, f"Cannot find file {batch['input_file_id']}.", "file_id"
                )
            )
        lines: list[_Line] = []
        numbers: dict[str, int] = {}
        for number, raw in enumerate((data or b"").decode(errors="replace").splitlines(), start=1):
            if not raw.strip():
                continue
            line_errors = self._check_line(batch["endpoint"], number, raw, numbers)
            errors += line_errors
            if not line_errors:
                obj = json.loads(raw)
                numbers[obj["custom_id"]] = number
                lines.append(_Line(number, obj["custom_id"], obj["body"]))
        if data is not None and not lines and not errors:
            errors.append(_batch_error("empty_file", None, "The batch input file is empty.", None))

        scenario = run.scenario
        for custom_id, spec in dict(scenario.get("fail_validation", {})).items():
            spec = spec if isinstance(spec, dict) else {"code": spec}
            code = str(spec["code"])
            errors.append(
                _batch_error(
                    code,
                    numbers.get(custom_id),
                    spec.get("message", f"Stand-in validation failure '{code}' for {custom_id}."),
                    spec.get("param", _PARAM_FOR_CODE.get(code)),
                )
            )
        if "error_code" in scenario:
            code = str(scenario["error_code"])
            errors.append(_batch_error(code, None, f"Stand-in batch failure '{code}'.", None))

        if errors:
            errors.sort(key=lambda e: (e["line"] is not None, e["line"] or 0))
            batch["errors"] = {"object": "list", "data": errors}
            return False
        run.lines = lines
        batch["request_counts"] = {"total": len(lines), "completed": 0, "failed": 0}
        batch["model"] = lines[0].body.get("model")
        return True

    @staticmethod
    def _check_line(endpoint: str, number: int, raw: str, seen: dict[str, int]) -> list[Json]:
        """Structural checks the real service does before running anything."""
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            return [
                _batch_error("invalid_json_line", number, "This line is not parseable as valid JSON.", None)
            ]
        errors = [
            _batch_error("missing_required_parameter", number, f"Missing required parameter: '{name}'.", name)
            for name in ("custom_id", "method", "url", "body")
            if name not in obj
        ]
        if errors:
            return errors
        if obj["url"] != endpoint:
            return [
                _batch_error(
                    "invalid_url",
                    number,
                    "The URL provided for this request does not match the batch endpoint.",
                    "url",
                )
            ]
        if str(obj["method"]).upper() != "POST":
            return [_batch_error("invalid_request", number, "Only POST requests are supported.", "method")]
        if not isinstance(obj["body"], dict):
            return [_batch_error("invalid_request", number, "'body' must be a JSON object.", "body")]
        if obj["body"].get("stream"):
            return [
                _batch_error(
                    "streaming_unsupported",
                    number,
                    "Streaming is not supported in the Batch API.",
                    "body.stream",
                )
            ]
        if "model" not in obj["body"]:
            return [_batch_error("invalid_request", number, "Model parameter is required.", "body.model")]
        if obj["custom_id"] in seen:
            return [
                _batch_error(
                    "duplicate_custom_id",
                    number,
                    "The custom_id for this request is a duplicate of another request.",
                    "custom_id",
                )
            ]
        return []

    # ------------------------------------------------------------------ execution

    def _finish(self, batch_id: str, *, executed: int, expired: bool) -> None:
        """Execute the first ``executed`` lines and write the output / error files."""
        batch, run = self.batches[batch_id], self._runs[batch_id]
        lines = run.lines or []
        malformed = set(run.scenario.get("malformed", ()))
        records: list[tuple[bool, Json]] = []  # (goes to the output file, record)
        usage = {"input": 0, "cached": 0, "output": 0}
        for line in lines[:executed]:
            ok, record = self._execute(batch, line, usage)
            records.append((ok, record))
        if expired:
            for line in lines[executed:]:
                record = answers.expired_line(self._new_id("batch_req_", 32), line.custom_id)
                records.append((False, record))
        if self.reverse_output:
            records.reverse()  # the real service does not promise input order

        self.results[batch_id] = {record["custom_id"]: record for _, record in records}
        outputs = [self._serialise(r, malformed) for ok, r in records if ok]
        errors = [self._serialise(r, malformed) for ok, r in records if not ok]
        now = self._now()
        if outputs:
            name = f"{batch_id}_output.jsonl"
            batch["output_file_id"] = self._store_file(
                "".join(outputs).encode(), name, "batch_output", now, now + BATCH_FILE_TTL_SECONDS
            )["id"]
        if errors:
            name = f"{batch_id}_error.jsonl"
            batch["error_file_id"] = self._store_file(
                "".join(errors).encode(), name, "batch_output", now, now + BATCH_FILE_TTL_SECONDS
            )["id"]
        batch["request_counts"] = {
            "total": len(lines),
            "completed": len(outputs),
            "failed": len(errors),
        }
        if records:
            batch["usage"] = {
                "input_tokens": usage["input"],
                "input_tokens_details": {"cached_tokens": usage["cached"]},
                "output_tokens": usage["output"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage["input"] + usage["output"],
            }
        run.late_polls_left = int(run.scenario.get("late_output_polls", 0))

    @staticmethod
    def _serialise(record: Json, malformed: set[str]) -> str:
        line = json.dumps(record)
        if record["custom_id"] in malformed:
            line = line[:MALFORMED_CHARS]  # cut mid-object: not valid JSON any more
        return line + "\n"

    def _execute(self, batch: Json, line: _Line, usage: dict[str, int]) -> tuple[bool, Json]:
        """Run one line; returns (2xx, output record) and adds its tokens to ``usage``."""
        self.executed.append((batch["id"], line.custom_id))
        queue = self.line_statuses.get(line.custom_id)
        status = queue.pop(0) if queue else 200
        request_id = self._new_id("req_", 24)
        if 200 <= status < 300:
            body = self._success(batch["endpoint"], line.body)
            _add_usage(usage, body)
            if line.custom_id in self.usage_for:  # the line only: the batch's own totals stay sane
                body["usage"] = self.usage_for[line.custom_id]
        elif status >= 500:
            status = 500  # the batch output reports upstream server faults as a plain 500
            body = error_body("The server had an error while processing your request.", "server_error")
        else:
            body = error_body(f"Stand-in line failure {status}.")
        record = answers.output_line(self._new_id("batch_req_", 32), line.custom_id, status, request_id, body)
        return 200 <= status < 300, record

    def _success(self, endpoint: str, body: Json) -> Json:
        """A real-shaped success body for ``endpoint``."""
        model = str(body.get("model", MODEL_ID))
        created = self._now()
        cached_half = body.get("user") == "cached"
        if endpoint == "/v1/chat/completions":
            messages = body.get("messages") or []
            prompt = " ".join(_text(m.get("content")) for m in messages if isinstance(m, dict))
            reply = f"echo: {_last_user_text(messages)}"
            counts = answers.usage(prompt, reply, as_openai=True, cached_half=cached_half)
            answer_id = self._new_id("chatcmpl-", 24)
            return answers.chat_completion(answer_id, created, model, reply, counts, as_openai=True)
        if endpoint == "/v1/completions":
            prompt = _text(body.get("prompt"))
            reply = f"echo: {prompt}"
            counts = answers.usage(prompt, reply, as_openai=True, cached_half=cached_half)
            return answers.text_completion(self._new_id("cmpl-", 24), created, model, reply, counts)
        if endpoint == "/v1/embeddings":
            inputs = body.get("input")
            items = inputs if isinstance(inputs, list) and inputs and isinstance(inputs[0], str) else [inputs]
            return answers.embeddings(model, items, [_text(item) for item in items])
        if endpoint == "/v1/responses":
            prompt = _text(body.get("input"))
            reply = f"echo: {prompt}"
            counts = answers.usage(prompt, reply, as_openai=True, cached_half=cached_half)
            return answers.response(
                self._new_id("resp_", 24),
                self._new_id("msg_", 24),
                created,
                model,
                reply,
                counts,
                parallel_tool_calls=True,
                tool_choice="auto",
                tools=[],
                error=None,
                incomplete_details=None,
                instructions=None,
                metadata={},
            )
        model = str(body.get("model", "omni-moderation-latest"))
        return answers.moderation(self._new_id("modr-", 24), model, as_openai=True)


@dataclass
class _Request:
    """What a route handler needs from the ASGI call."""

    scope: Scope
    headers: dict[str, str]
    raw: bytes
    send: Send
    extra: dict[str, str]
    receive: Receive


async def _disconnected(receive: Receive) -> None:
    """Return once the client has hung up (the request's body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _batch_error(code: str, line: int | None, message: str, param: str | None) -> Json:
    return {"code": code, "line": line, "message": message, "param": param}


def _add_usage(total: dict[str, int], body: Json) -> None:
    """Fold one success body's usage into the batch totals (chat, completions, embeddings, responses)."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return
    if "input_tokens" in usage:  # Responses API naming
        total["input"] += usage["input_tokens"]
        total["cached"] += usage["input_tokens_details"]["cached_tokens"]
        total["output"] += usage["output_tokens"]
        return
    total["input"] += usage.get("prompt_tokens", 0)
    total["cached"] += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    total["output"] += usage.get("completion_tokens", 0)
