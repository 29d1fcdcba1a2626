"""X-Forwarded-* served in-process (ASGI, no server between): only a peer FORWARDED_ALLOW_IPS
lists moves the client address, scheme, host and prefix; the real-HTTP side is in
tests/app/dropin/test_anthropic_sdk.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.middleware import DefineMiddleware

from app.web.forwarded import ForwardedHeaders, public_base
from app.web.http import HttpRequest

PROXIED = {
    "x-forwarded-for": "198.51.100.7, 10.0.0.9",
    "x-forwarded-proto": "https",
    "x-forwarded-host": "gw.example",
    "x-forwarded-prefix": "/llm",
}


@get("/where", sync_to_thread=False)
def where(request: HttpRequest) -> dict[str, Any]:
    return {"base": public_base(request), "client": request.client.host if request.client else None}


async def seen(allow: str, peer: str, headers: dict[str, str]) -> dict[str, Any]:
    app = Litestar([where], middleware=[DefineMiddleware(ForwardedHeaders, allow_ips=allow)])
    transport = httpx.ASGITransport(app=app, client=(peer, 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://own.host:4000") as client:
        answer: dict[str, Any] = (await client.get("/where", headers=headers)).json()
        return answer


@pytest.mark.parametrize(
    ("allow", "peer"),
    [("10.0.0.0/8", "192.0.2.1"), ("10.0.0.1", "10.0.0.2"), ("fd00::/8", "10.0.0.1"), ("10.0.0.0/8", "::1")],
)
async def test_a_peer_not_listed_moves_nothing(allow: str, peer: str) -> None:
    assert await seen(allow, peer, PROXIED) == {"base": "http://own.host:4000", "client": peer}


@pytest.mark.parametrize(
    ("allow", "peer"), [("10.0.0.0/8", "10.0.0.1"), ("*", "192.0.2.1"), ("10.0.0.9,::1", "::1")]
)
async def test_a_listed_proxy_is_believed(allow: str, peer: str) -> None:
    # With 10.0.0.0/8 listed the nearest address not listed is the client; with * the first one.
    assert await seen(allow, peer, PROXIED) == {"base": "https://gw.example/llm", "client": "198.51.100.7"}


@pytest.mark.parametrize(
    "host",
    ["evil.example/x", "u@evil.example", "evil example", "evil.example:70000", "evil.example:x", "a" * 300],
)
async def test_a_listed_proxys_bad_forwarded_host_is_ignored(host: str) -> None:
    answer = await seen("10.0.0.0/8", "10.0.0.1", {**PROXIED, "x-forwarded-host": host})
    assert answer["base"] == "https://own.host:4000/llm"
