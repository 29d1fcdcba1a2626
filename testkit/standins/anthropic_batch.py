"""Stand-in for the Anthropic Message Batches API (``/v1/messages/batches``).

Plain ASGI, no framework, served like the OpenAI stand-in (testkit.standins.serve). A batch ends
after ``polls_to_end`` retrievals, never on wall-clock time. Every answer is validated against
the official ``anthropic`` SDK's types before it is sent, errors included. Switches are plain
attributes a test sets between requests; recordings are plain lists and dicts:
- ``fail_next``: ``{"POST /v1/messages/batches": [529, 429]}``: the next matching calls answer
  these statuses (Anthropic's error type for each; ``retry_after`` on 429 and 529);
- ``lost_create_answers``: ``["500"]`` or ``["disconnect"]``: the create is applied, its answer lost;
- ``refuse_key``: every call answers 401 authentication_error;
- ``outcome_for``: a request's last user text → "errored" | "canceled" | "expired" | "missing";
- ``results_expired``: ended batches are archived and their results answer 404.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from anthropic.types.messages import DeletedMessageBatch, MessageBatch, MessageBatchIndividualResponse
from anthropic.types.shared import ErrorResponse
from pydantic import BaseModel

from testkit.standins.answers import anthropic_error, anthropic_message
from testkit.standins.asgi import Receive, Scope, Send, lifespan, read_body, send_bytes, send_json
from testkit.standins.asgi import last_user_text as _last_user_text

Json = dict[str, Any]
BATCHES = "/v1/messages/batches"
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def checked(model: type[BaseModel], payload: Json) -> Json:
    """`payload`, after the SDK's type has accepted it (the SDK is the contract)."""
    model.model_validate(payload)
    return payload


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.body = checked(ErrorResponse, anthropic_error(_KINDS.get(status, "api_error"), message, "req_x"))


@dataclass
class _Run:
    requests: list[Json]
    polls: int = 0


class AnthropicBatchStandin:
    """The Message Batches API, in memory."""

    def __init__(self) -> None:
        self.batches: dict[str, Json] = {}
        self.calls: list[tuple[str, str]] = []
        self.call_times: list[float] = []  # time.monotonic() of each call's arrival, parallel to calls
        self.polls_to_end = 1
        self.fail_next: dict[str, list[int]] = {}
        self.retry_after = "0"
        self.lost_create_answers: list[str] = []
        self.refuse_key = False
        self.outcome_for: dict[str, str] = {}
        self.results_expired = False
        self.created_at: datetime | None = None  # a fixed creation time (results expiry tests)
        self._runs: dict[str, _Run] = {}
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        method, path = scope["method"], scope["path"]
        self.calls.append((method, path))
        self.call_times.append(time.monotonic())
        body = await read_body(receive)
        try:
            await self._route(method, path, parse_qs(scope["query_string"].decode()), body, send)
        except ApiError as exc:
            await send_json(send, exc.status, exc.body, exc.headers)

    async def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, send: Send
    ) -> None:
        self._faults(method, path)
        rest = path.removeprefix(BATCHES).strip("/").split("/") if path.startswith(BATCHES) else None
        if rest is None:
            raise ApiError(404, f"no route {path}")
        if method == "POST" and rest == [""]:
            await self._create(json.loads(body or b"{}"), send)
        elif method == "GET" and rest == [""]:
            await send_json(send, 200, self._list(query))
        elif method == "GET" and len(rest) == 1:
            await send_json(send, 200, self._retrieve(rest[0]))
        elif method == "POST" and len(rest) == 2 and rest[1] == "cancel":
            await send_json(send, 200, self._cancel(rest[0]))
        elif method == "GET" and len(rest) == 2 and rest[1] == "results":
            await self._results(rest[0], send)
        elif method == "DELETE" and len(rest) == 1:
            await send_json(send, 200, self._delete(rest[0]))
        else:
            raise ApiError(404, f"no route {method} {path}")

    def _faults(self, method: str, path: str) -> None:
        if self.refuse_key:
            raise ApiError(401, "invalid x-api-key")
        for pattern, statuses in self.fail_next.items():
            if statuses and f"{method} {path}".startswith(pattern):
                status = statuses.pop(0)
                headers = {"retry-after": self.retry_after} if status in (429, 529) else {}
                raise ApiError(status, f"stand-in fault {status}", headers)

    async def _create(self, payload: Json, send: Send) -> None:
        requests = payload.get("requests")
        if not isinstance(requests, list) or not requests:
            raise ApiError(400, "requests: must be a non-empty list")
        seen: set[str] = set()
        for i, entry in enumerate(requests):
            custom_id = entry.get("custom_id") if isinstance(entry, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id) or custom_id in seen:
                raise ApiError(400, f"requests.{i}.custom_id: invalid or repeated")
            if not isinstance(entry.get("params"), dict) or "max_tokens" not in entry["params"]:
                raise ApiError(400, f"requests.{i}.params.max_tokens: Field required")
            seen.add(custom_id)
        created = self.created_at or datetime.now(UTC)
        batch_id = f"msgbatch_{next(self._ids):04d}"
        self.batches[batch_id] = {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {
                "processing": len(requests),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": _iso(created),
            "expires_at": _iso(created + timedelta(hours=24)),
            "ended_at": None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }
        self._runs[batch_id] = _Run(requests)
        if self.lost_create_answers:
            fault = self.lost_create_answers.pop(0)
            if fault == "500":
                raise ApiError(500, "Internal server error")
            start = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
            await send({"type": "http.response.start", "status": 200, "headers": start})
            await send({"type": "http.response.body", "body": b'{"id": "msgbatch_', "more_body": True})
            return  # the answer is left unfinished: the connection closes mid-body
        await send_json(send, 200, checked(MessageBatch, self.batches[batch_id]))

    def _list(self, query: dict[str, list[str]]) -> Json:
        limit = int(query.get("limit", ["20"])[0])
        newest = sorted(self.batches, reverse=True)
        if after := query.get("after_id", [None])[0]:
            newest = [b for b in newest if b < after]
        page = newest[:limit]
        for batch_id in page:
            checked(MessageBatch, self.batches[batch_id])
        return {
            "data": [self.batches[b] for b in page],
            "has_more": len(newest) > limit,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }

    def _batch(self, batch_id: str) -> Json:
        if batch_id not in self.batches:
            raise ApiError(404, f"no batch {batch_id}")
        return self.batches[batch_id]

    def _retrieve(self, batch_id: str) -> Json:
        batch, run = self._batch(batch_id), self._runs[batch_id]
        if batch["processing_status"] != "ended":
            run.polls += 1
            if run.polls >= self.polls_to_end or batch["processing_status"] == "canceling":
                self._end(batch_id)
        return checked(MessageBatch, batch)

    def _cancel(self, batch_id: str) -> Json:
        batch = self._batch(batch_id)
        if batch["processing_status"] == "in_progress":
            batch["processing_status"] = "canceling"
            batch["cancel_initiated_at"] = _iso(datetime.now(UTC))
        return checked(MessageBatch, batch)

    def _end(self, batch_id: str) -> None:
        batch, canceling = self.batches[batch_id], self.batches[batch_id]["processing_status"] == "canceling"
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        for entry in self._runs[batch_id].requests:
            kind = "canceled" if canceling else self._outcome(entry)
            counts[{"missing": "errored"}.get(kind, kind)] += 1
        now = datetime.now(UTC)
        batch.update(processing_status="ended", request_counts=counts, ended_at=_iso(now))
        batch["results_url"] = f"{BATCHES}/{batch_id}/results"
        if self.results_expired:
            batch["archived_at"] = _iso(now)

    def _outcome(self, entry: Json) -> str:
        return self.outcome_for.get(_last_user_text(entry["params"].get("messages")), "succeeded")

    async def _results(self, batch_id: str, send: Send) -> None:
        batch = self._batch(batch_id)
        if batch["processing_status"] != "ended" or self.results_expired:
            raise ApiError(404, f"no results for {batch_id}")
        canceling = batch["cancel_initiated_at"] is not None
        lines = []
        for entry in self._runs[batch_id].requests:
            kind = "canceled" if canceling else self._outcome(entry)
            if kind != "missing":
                lines.append(json.dumps(checked(MessageBatchIndividualResponse, _line(entry, kind))))
        await send_bytes(send, 200, ("\n".join(lines) + "\n").encode(), "application/binary")

    def _delete(self, batch_id: str) -> Json:
        if self._batch(batch_id)["processing_status"] != "ended":
            raise ApiError(400, "a batch must end before it is deleted")
        del self.batches[batch_id]
        return checked(DeletedMessageBatch, {"id": batch_id, "type": "message_batch_deleted"})

    def executed(self) -> list[str]:
        """The custom_ids of every request created, in every batch."""
        return [entry["custom_id"] for run in self._runs.values() for entry in run.requests]


def _line(entry: Json, kind: str) -> Json:
    params, custom_id = entry["params"], entry["custom_id"]
    if kind == "succeeded":
        prompt = _last_user_text(params.get("messages"))
        message = anthropic_message(f"msg_{custom_id[-12:]}", params["model"], f"reply to {prompt}", prompt)
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}
    if kind == "errored":
        error = anthropic_error("invalid_request_error", "max_tokens: too large", "req_1")
        return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}
    return {"custom_id": custom_id, "result": {"type": kind}}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
