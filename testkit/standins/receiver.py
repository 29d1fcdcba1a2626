"""Stand-in for a customer's webhook endpoint."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testkit.standins.asgi import (
    Receive,
    Scope,
    Send,
    lifespan,
    read_body,
    request_headers,
    send_bytes,
    send_json,
)
from testkit.waiting import wait_until

CUSTOM_ID_HEADER = "x-batchgate-custom-id"


@dataclass
class Received:
    """One delivery attempt as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int
    at: float
    custom_id: str | None = None
    method: str = "POST"


class WebhookReceiver:
    """Plain ASGI app that records webhook deliveries and misbehaves on demand.

    Switches are keyed by custom id and may be changed between deliveries.
    Precedence: ``down_status`` (every POST, as a receiver that is down), then ``status_for``,
    then ``fail_first``, else 200 ``{"ok":true}``.
    ``delay_for`` applies on top of whichever status is chosen, and ``retry_after_for`` adds a
    ``Retry-After`` header (its value as given: seconds or an HTTP date) to a non-2xx answer.
    """

    def __init__(self) -> None:
        self.down_status: int | None = None
        self.fail_first: dict[str, int] = {}
        self.fail_status: int = 500
        self.status_for: dict[str, int] = {}
        self.delay_for: dict[str, float] = {}
        self.retry_after_for: dict[str, str] = {}
        self.headers_for: dict[str, dict[str, str]] = {}  # more answer headers, by custom id
        self.body_for: dict[str, bytes] = {}
        # Answer 200 at once, then drip the body a byte at a time, every `drip_seconds`, for ever.
        self.drip_for: dict[str, float] = {}
        self.redirect_location: str = "http://127.0.0.1:1/elsewhere"

        self.received: list[Received] = []
        self._attempts: collections.Counter[str] = collections.Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = request_headers(scope)
        body = await read_body(receive)
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        custom_id = headers.get(CUSTOM_ID_HEADER)
        if custom_id is None and isinstance(parsed, dict) and parsed.get("custom_id") is not None:
            custom_id = str(parsed["custom_id"])
        elif custom_id is None and isinstance(parsed, dict) and parsed.get("object") == "event":
            custom_id = str(parsed.get("type"))  # a batch event: its switches are keyed by its type

        method: str = scope["method"]
        status = 405 if method != "POST" else self._decide(custom_id)
        # Record on arrival, not after the delay, so a client that times out
        # still leaves evidence of the attempt.
        self.received.append(
            Received(
                path=scope["path"],
                headers=headers,
                body=body,
                json=parsed,
                status=status,
                at=time.monotonic(),
                custom_id=custom_id,
                method=method,
            )
        )
        delay = self.delay_for.get(custom_id, 0.0) if custom_id is not None else 0.0
        if delay > 0:
            await asyncio.sleep(delay)

        extra: dict[str, str] = {}
        if 300 <= status < 400:
            extra["location"] = self.redirect_location
        if status == 405:
            extra["allow"] = "POST"
        if custom_id is not None:
            extra.update(self.headers_for.get(custom_id, {}))
        retry_after = self.retry_after_for.get(custom_id) if custom_id is not None else None
        if retry_after is not None and not 200 <= status < 300:
            extra["retry-after"] = retry_after
        if custom_id is not None and custom_id in self.drip_for:
            await _drip(send, receive, self.drip_for[custom_id])
        elif custom_id is not None and custom_id in self.body_for:
            await send_bytes(send, status, self.body_for[custom_id], "application/json", extra)
        else:
            await send_json(send, status, {"ok": 200 <= status < 300}, extra)

    def _decide(self, custom_id: str | None) -> int:
        if self.down_status is not None:
            return self.down_status
        if custom_id is None:
            return 200
        self._attempts[custom_id] += 1
        if custom_id in self.status_for:
            return self.status_for[custom_id]
        if self._attempts[custom_id] <= self.fail_first.get(custom_id, 0):
            return self.fail_status
        return 200

    def successes(self, custom_id: str | None = None) -> list[Received]:
        """Deliveries answered 2xx, optionally only for one custom id."""
        return [
            r
            for r in self.received
            if 200 <= r.status < 300 and (custom_id is None or r.custom_id == custom_id)
        ]

    def answered(self, path: str) -> list[Received]:
        """Deliveries to one path answered 2xx, in order."""
        return [r for r in self.received if r.path == path and 200 <= r.status < 300]

    def by_custom_id(self) -> dict[str, list[Received]]:
        """Deliveries grouped by custom id; those without one go under ``""``."""
        grouped: dict[str, list[Received]] = {}
        for r in self.received:
            grouped.setdefault(r.custom_id or "", []).append(r)
        return grouped

    def reset(self) -> None:
        """Forget deliveries and attempt counts; keep the switches."""
        self.received.clear()
        self._attempts.clear()

    async def wait_for(
        self,
        predicate: Callable[[WebhookReceiver], bool],
        timeout: float = 30.0,  # noqa: ASYNC109 - part of the agreed test-helper API
        interval: float = 0.02,
    ) -> None:
        """Poll ``predicate(self)`` until true; raise ``TimeoutError`` otherwise."""
        await wait_until(lambda: predicate(self), timeout, interval, what=self._summary)

    def _summary(self) -> str:
        counts = {k: [r.status for r in v] for k, v in self.by_custom_id().items()}
        return (
            f"the webhook predicate: {len(self.received)} received, {len(self.successes())} 2xx; "
            f"statuses by custom id: {counts}"
        )


async def _drip(send: Send, receive: Receive, every: float) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    gone = asyncio.ensure_future(receive())  # the body was read: the next message is the disconnect
    try:
        while not gone.done():
            await send({"type": "http.response.body", "body": b".", "more_body": True})
            await asyncio.wait({gone}, timeout=every)
    finally:
        gone.cancel()
