"""What the stand-in servers share (they are plain ASGI apps, no framework): reading a request,
answering JSON or bytes, the lifespan handshake, a relay a test can hook into, and the text helpers
their fake models answer with."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
Hook = Callable[[Scope], None]


# -- reading a request -------------------------------------------------------------------------


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers, names lower-cased (a repeated header keeps its last value)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


# -- answering ---------------------------------------------------------------------------------


async def send_bytes(
    send: Send, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
) -> None:
    """A complete answer: content-type and content-length first, then `headers` (lower-cased)."""
    raw_headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})


async def send_json(send: Send, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    await send_bytes(send, status, json.dumps(payload).encode(), "application/json", headers)


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class Relay:
    """Forwards every call to `app`, which may be swapped while served; `before` and `after` hooks
    see each HTTP request's scope just before and after `app` answers it. A test uses them to act
    at an exact point of a conversation (flip a stand-in's switch when a given request arrives),
    where waiting for it from outside would race."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.before: list[Hook] = []
        self.after: list[Hook] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        http = scope["type"] == "http"
        for hook in self.before if http else ():
            hook(scope)
        await self.app(scope, receive, send)
        for hook in self.after if http else ():
            hook(scope)


# -- what fake models say ----------------------------------------------------------------------


def text_of(value: Any) -> str:
    """Flatten message content / prompt / input (strings, parts, lists of prompts) into plain text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [
            text_of(item.get("text", item.get("content"))) if isinstance(item, dict) else text_of(item)
            for item in value
        ]
        return " ".join(p for p in parts if p)
    return str(value)


def word_count(text: str) -> int:
    """Deterministic stand-in token count."""
    return len(text.split())


def last_user_text(messages: Any, *, else_last: bool = False) -> str:
    """The text of the last user message; with `else_last`, of the last message when none is the
    user's."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    if else_last and messages and isinstance(messages[-1], dict):
        return text_of(messages[-1].get("content"))
    return ""
