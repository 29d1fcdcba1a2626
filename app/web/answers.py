"""A JSON answer encoded once and sent as two ASGI messages: the response class of the routes
answered most often (single intake), where Litestar's own `Response` was about 5% of the CPU
time of a request (a Response, then an ASGIResponse, its headers merged and encoded per answer).

The wire answer is the one Litestar gives for the same value: its status, `content-type:
application/json`, `content-length`, and msgspec's JSON of the value. A route given this class
must have no response headers, cookies, background tasks or after_request hooks of its own (they
would be left out), and must not answer HEAD; `before_send` hooks still see every message.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response
from litestar.types import Receive, Scope, Send

_encode = msgspec.json.Encoder().encode


class JsonAnswer(Response[Any]):
    """Litestar's data handler builds one per answer (route's `response_class`); only the
    content and the status are kept."""

    def __init__(self, content: Any, *, status_code: int | None = None, **_: Any) -> None:
        self.content = content
        self.status_code = status_code or 200

    def to_asgi_response(self, *_: Any, **__: Any) -> _Sent:  # type: ignore[override]
        return _Sent(self.status_code or 200, _encode(self.content))


class _Sent:
    """The ASGI answer: start (with its own headers list, which before_send hooks may extend)
    and the whole body."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(self.body))]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})
