"""Stand-in for an OpenAI-compatible inference server (Ollama, vLLM, llama.cpp)."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from typing import Any

from testkit.standins import answers
from testkit.standins.answers import error_body
from testkit.standins.asgi import (
    Receive,
    Scope,
    Send,
    last_user_text,
    lifespan,
    read_body,
    request_headers,
    send_json,
    text_of,
)

ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/moderations",
    }
)


def _last_user_content(body: dict[str, Any]) -> str:
    return last_user_text(body.get("messages") or [], else_last=True)


def request_key(path: str, body: dict[str, Any]) -> str:
    """Key that behaviour switches are looked up by.

    ``user`` wins so tests can tag requests explicitly; otherwise the prompt
    text, which is usually unique per batch line anyway.
    """
    user = body.get("user")
    if user is not None:
        return str(user)
    if path == "/v1/chat/completions":
        return _last_user_content(body)
    if path == "/v1/completions":
        return text_of(body.get("prompt"))
    return text_of(body.get("input"))


class InferenceStandin:
    """Plain ASGI app answering OpenAI-shaped requests, with failure switches.

    Switches are plain attributes; tests mutate them between requests.
    Precedence per request: auth, ``status_for``, ``always_fail``,
    ``fail_first``, then success (with ``usage_for``'s usage, if any).
    ``delay_seconds`` applies to every answer, ``delay_for`` to one key's. ``tool_call_for`` makes a
    chat request that offers tools answer with a call instead of text: of the tool its
    ``tool_choice`` names, else of its first tool, with that key's arguments (a dict, sent as
    OpenAI's JSON string; a str is sent as it is, to try unreadable arguments).
    A whole server in trouble: ``down_status`` answers every request (any path, any method) with
    that status; clearing ``answering`` holds every request unanswered until it is set again.
    A server of limited capacity: with ``capacity`` N, at most N requests are served (their delay)
    at once; one beyond waits up to ``queue_seconds`` for its turn, then is answered 429 (counted
    in ``turned_away``), as a server with a bounded queue does. Set it before the first request.
    """

    def __init__(self) -> None:
        self.fail_first: dict[str, int] = {}
        self.fail_status: int = 500
        self.retry_after: float | None = None
        self.always_fail: set[str] = set()
        self.status_for: dict[str, int] = {}
        self.delay_seconds: float = 0.0
        self.delay_for: dict[str, float] = {}  # key -> seconds before answering that request
        self.required_api_key: str | None = None
        self.usage_for: dict[str, dict[str, Any]] = {}  # key -> usage reported instead of the counted one
        self.reply_for: dict[str, str] = {}  # key -> the assistant's text instead of the echo
        self.tool_call_for: dict[str, dict[str, Any] | str] = {}  # key -> the called tool's arguments
        self.down_status: int | None = None
        self.answering = asyncio.Event()
        self.answering.set()
        self.refused = 0  # requests answered down_status
        self.capacity: int | None = None
        self.queue_seconds: float = 0.1
        self.turned_away = 0  # requests answered 429 for want of capacity
        self.serving = 0  # requests holding a place of the capacity
        self.max_serving = 0
        self._places: asyncio.Semaphore | None = None

        self.calls: list[dict[str, Any]] = []
        self.calls_by_key: collections.Counter[str] = collections.Counter()
        self.in_flight: int = 0
        self.abandoned: list[str] = []  # keys of delayed calls whose caller hung up before the answer
        self.max_in_flight: int = 0

        self._counter = 0
        self._failures: collections.Counter[str] = collections.Counter()

    def reset(self) -> None:
        """Forget recorded calls and failure counts; keep the switches."""
        self.calls.clear()
        self.calls_by_key.clear()
        self._failures.clear()
        self.max_in_flight = self.in_flight
        self.turned_away, self.max_serving = 0, self.serving

    def calls_for(self, key: str) -> list[dict[str, Any]]:
        """Recorded calls whose key is ``key``."""
        return [c for c in self.calls if c["key"] == key]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._handle(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _next_id(self) -> int:
        self._counter += 1
        return self._counter

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        n = self._next_id()
        rid = {"x-request-id": f"req_{n}"}
        path: str = scope["path"]
        headers = request_headers(scope)
        raw = await read_body(receive)
        await self.answering.wait()
        if self.down_status is not None:
            self.refused += 1
            await send_json(send, self.down_status, error_body("server down", "server_error"), rid)
            return

        if path not in ROUTES:
            await send_json(send, 404, error_body(f"no route {path}", "not_found_error"), rid)
            return
        if scope["method"] != "POST":
            await send_json(
                send,
                405,
                error_body("method not allowed", "invalid_request_error"),
                rid | {"allow": "POST"},
            )
            return
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            await send_json(send, 400, error_body("body must be a JSON object", "invalid_request_error"), rid)
            return

        key = request_key(path, body)
        if not await self._take_place():
            self.turned_away += 1
            self._record(path, body, headers, key, 429)
            await send_json(send, 429, error_body("the server is at capacity", "rate_limit_error"), rid)
            return
        try:
            status, payload, extra = self._decide(path, body, key, headers, n)
            self._record(path, body, headers, key, status)
            if (delay := self.delay_for.get(key, self.delay_seconds)) > 0:
                await self._delay(receive, key, delay)
            await send_json(send, status, payload, rid | extra)
        finally:
            self._leave_place()

    def _record(
        self, path: str, body: dict[str, Any], headers: dict[str, str], key: str, status: int
    ) -> None:
        call = {"path": path, "body": body, "headers": headers, "key": key, "status": status}
        self.calls.append(call | {"at": time.monotonic()})  # when it arrived, for the waits between
        self.calls_by_key[key] += 1

    async def _take_place(self) -> bool:
        """A place among the `capacity` served at once, waited for up to `queue_seconds`; always
        one without a capacity."""
        if self.capacity is None:
            return True
        if self._places is None:
            self._places = asyncio.Semaphore(self.capacity)
        try:
            async with asyncio.timeout(self.queue_seconds):
                await self._places.acquire()
        except TimeoutError:
            return False
        self.serving += 1
        self.max_serving = max(self.max_serving, self.serving)
        return True

    def _leave_place(self) -> None:
        if self._places is not None:
            self.serving -= 1
            self._places.release()

    async def _delay(self, receive: Receive, key: str, seconds: float) -> None:
        """Wait before answering, noting in `abandoned` a caller that hangs up meanwhile (the
        answer is still sent, into the void, as a server busy computing it would)."""
        loop = asyncio.get_running_loop()
        answer_at = loop.time() + seconds
        hangup = asyncio.ensure_future(receive())
        try:
            await asyncio.wait({hangup}, timeout=seconds)
            if hangup.done() and hangup.result().get("type") == "http.disconnect":
                self.abandoned.append(key)
                # The rest of the wait, as before: only the bookkeeping is new.
                await asyncio.sleep(max(answer_at - loop.time(), 0))
        finally:
            hangup.cancel()

    def _decide(
        self, path: str, body: dict[str, Any], key: str, headers: dict[str, str], n: int
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Pick status, body and extra headers for one request."""
        expected_auth = f"Bearer {self.required_api_key}"
        if self.required_api_key is not None and headers.get("authorization") != expected_auth:
            return (
                401,
                error_body("invalid api key", "invalid_request_error", code="invalid_api_key"),
                {},
            )
        if key in self.status_for:
            status = self.status_for[key]
            kind = "invalid_request_error" if status < 500 else "server_error"
            return status, error_body(f"stand-in status {status}", kind), {}
        failing = key in self.always_fail
        if not failing and self._failures[key] < self.fail_first.get(key, 0):
            self._failures[key] += 1
            failing = True
        if failing:
            extra: dict[str, str] = {}
            if self.retry_after is not None:
                extra["retry-after"] = f"{self.retry_after:g}"
            return self.fail_status, error_body("stand-in failure", "server_error"), extra
        answer = self._success(path, body, n)
        if key in self.reply_for and path == "/v1/chat/completions":
            answer["choices"][0]["message"]["content"] = self.reply_for[key]
        if key in self.tool_call_for and path == "/v1/chat/completions" and body.get("tools"):
            answer["choices"][0] |= _tool_call(body, self.tool_call_for[key], n)
        if key in self.usage_for:
            answer["usage"] = self.usage_for[key]
        return 200, answer, {}

    def _success(self, path: str, body: dict[str, Any], n: int) -> dict[str, Any]:
        model = body.get("model", "standin-model")
        created = int(time.time())
        if path == "/v1/chat/completions":
            prompt = " ".join(
                text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict)
            )
            reply = f"echo: {_last_user_content(body)}"
            return answers.chat_completion(
                f"chatcmpl-{n}", created, model, reply, answers.usage(prompt, reply)
            )
        if path == "/v1/completions":
            prompt = text_of(body.get("prompt"))
            reply = f"echo: {prompt}"
            return answers.text_completion(f"cmpl-{n}", created, model, reply, answers.usage(prompt, reply))
        if path == "/v1/embeddings":
            inputs = body.get("input")
            items = (
                inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
            )
            return answers.embeddings(model, items, [text_of(i) for i in items])
        if path == "/v1/responses":
            prompt = text_of(body.get("input"))
            reply = f"echo: {prompt}"
            return answers.response(
                f"resp_{n}", f"msg_{n}", created, model, reply, answers.usage(prompt, reply)
            )
        return answers.moderation(f"modr-{n}", body.get("model", "omni-moderation-latest"))


def _tool_call(body: dict[str, Any], arguments: dict[str, Any] | str, n: int) -> dict[str, Any]:
    """The choice's message and finish_reason of a turn that calls one tool, as OpenAI answers it."""
    choice = body.get("tool_choice")
    named = choice["function"] if isinstance(choice, dict) else body["tools"][0]["function"]
    name = named["name"]
    sent = arguments if isinstance(arguments, str) else json.dumps(arguments)
    call = {"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": sent}}
    return {
        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
        "finish_reason": "tool_calls",
    }
