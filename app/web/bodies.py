"""Request bodies that arrive too slowly, or too many uploads at once, are refused before they
use up the server: 600 uploads sending a byte a second held 600 connections and made `/health`
and intake refuse connections under a 1,024-descriptor limit.

- A body that sends nothing for BODY_IDLE_SECONDS is answered 408 (`body_timeout`) and its
  connection closed.
- At most UPLOADS_MAX uploads (an uploaded file, a bulk body, a message batch) are read at once,
  and UPLOADS_PER_KEY per API key (or per caller without one): one more is answered 429
  (`too_many_uploads`) with Retry-After, before its body is read.

A pure ASGI middleware on every route: it sees the body before any handler reads it.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
from typing import Any

from litestar.types import ASGIApp

from app.ground.config import Settings

# POST paths whose bodies are uploads (every mount of the faces).
UPLOADS = ("/files", "/requests/bulk", "/messages/batches")
RETRY_AFTER_SECONDS = 5


def _answer(
    status: int, code: str, title: str, detail: str, headers: list[tuple[bytes, bytes]]
) -> list[dict[str, Any]]:
    body = json.dumps({"errors": [{"code": code, "title": title, "detail": detail, "source": {}}]}).encode()
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    }
    return [start, {"type": "http.response.body", "body": body}]


class Uploads:
    """The uploads being read now, in all and by caller: one per app, shared by its routes."""

    def __init__(self) -> None:
        self.total = 0
        self.by_key: collections.Counter[str] = collections.Counter()


class BodyGuard:
    """Wraps a route (Litestar builds one per route; `uploads` is the app's): an idle deadline
    on every body, a cap on uploads read at once."""

    def __init__(self, app: ASGIApp, settings: Settings, uploads: Uploads) -> None:
        self.app = app
        self.idle = settings.body_idle_seconds
        self.most, self.most_per_key = settings.uploads_max, settings.uploads_per_key
        self.counts = uploads

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST" or not scope["path"].rstrip("/").endswith(UPLOADS):
            await self._with_deadline(scope, receive, send)
            return
        key, counts = _caller(scope), self.counts
        if counts.total >= self.most or counts.by_key[key] >= self.most_per_key:
            for message in _answer(
                429,
                "too_many_uploads",
                "Too many uploads",
                "Too many uploads are being read at once (UPLOADS_MAX, UPLOADS_PER_KEY); try again shortly.",
                [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
            ):
                await send(message)
            return
        counts.total += 1
        counts.by_key[key] += 1
        try:
            await self._with_deadline(scope, receive, send)
        finally:
            counts.total -= 1
            counts.by_key[key] -= 1
            if not counts.by_key[key]:
                del counts.by_key[key]

    async def _with_deadline(self, scope: Any, receive: Any, send: Any) -> None:
        """Run the app with each wait for the next piece of body bounded by BODY_IDLE_SECONDS;
        past it, the app sees the client gone and the client gets 408 (connection closed)."""
        state = {"complete": False, "timed_out": False, "answered": False}

        loop = asyncio.get_running_loop()

        async def bounded_receive() -> Any:
            if state["complete"] or state["timed_out"]:
                return await receive()
            message = await within(self.idle, receive, loop)
            if message is None:
                state["timed_out"] = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["complete"] = True
            return message

        async def guarded_send(message: Any) -> None:
            if state["timed_out"]:
                return  # the app's own answer to a client that stalled: ours goes instead
            state["answered"] = True
            await send(message)

        await self.app(scope, bounded_receive, guarded_send)
        if state["timed_out"] and not state["answered"]:
            detail = f"The request body sent nothing for {self.idle:g} s (BODY_IDLE_SECONDS)."
            for message in _answer(408, "body_timeout", "Body too slow", detail, [(b"connection", b"close")]):
                await send(message)


async def within(seconds: float, receive: Any, loop: asyncio.AbstractEventLoop) -> Any | None:
    """`await receive()`, or None when it took longer than `seconds`: asyncio.timeout's rule
    (a cancellation from elsewhere still propagates) without its object, its two look-ups of the
    running loop (each a getpid system call on Python 3.11) and its reschedule, 3-6% of single
    intake's CPU time at one body read a request. (wait_for wraps receive() in a task: 4%.)"""
    task = asyncio.current_task(loop)
    assert task is not None, "a body is read in a task"
    cancelling, expired = task.cancelling(), list[bool]()
    timer = loop.call_later(seconds, _expire, task, expired)
    try:
        return await receive()
    except asyncio.CancelledError:
        if expired and task.uncancel() <= cancelling:
            return None
        raise
    finally:
        timer.cancel()


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


def _caller(scope: Any) -> str:
    """Who an upload counts against: its API key (digested: never kept in memory as given), or
    its address without one."""
    headers: dict[bytes, bytes] = dict(scope.get("headers", []))
    given = headers.get(b"authorization") or headers.get(b"x-api-key")
    if given:
        return hashlib.sha256(given).hexdigest()[:16]
    client: Any = scope.get("client") or ("", 0)
    return f"address {client[0]}"
