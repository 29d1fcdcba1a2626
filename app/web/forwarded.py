"""Which X-Forwarded-* headers are believed: only those a proxy listed in FORWARDED_ALLOW_IPS
sends, so that no client can make Batchgate hand out links to another host (issue 29).

The app reads them itself, as its outermost middleware, and `batchgate serve` turns uvicorn's
own reading off: uvicorn replaces the connection's address with the forwarded client's before
the app runs, after which nothing can tell whether the peer was a trusted proxy. Under another
server, turn its proxy-header handling off too (`uvicorn --no-proxy-headers`).
"""

from __future__ import annotations

import re
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.ground.setting_lists import parse_proxies
from app.web.http import Connection
from app.web.protection import malformed_host

# Set in a connection's scope state: whether its peer is a proxy FORWARDED_ALLOW_IPS lists.
FROM_TRUSTED_PROXY = "batchgate.from_trusted_proxy"

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
# A name or IPv4 address, or a bracketed IPv6 one, and an optional port: nothing else (spaces,
# a path, userinfo, a query) can follow the host into a link.
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?")
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*")


class ForwardedHeaders:
    """The X-Forwarded-For and -Proto of a listed proxy become the connection's client address
    and scheme, by uvicorn's own middleware (the rule of its FORWARDED_ALLOW_IPS: the nearest
    address not listed is the client); whether the peer is listed is kept for public_base."""

    def __init__(self, app: ASGIApp, allow_ips: str) -> None:
        entries = parse_proxies(allow_ips)
        trusted: str | list[str] = "*" if entries == ("*",) else list(entries)
        self.rewrite = ProxyHeadersMiddleware(app, trusted)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        peer = client[0] if client else None
        state: dict[str, Any] = scope.setdefault("state", {})
        state[FROM_TRUSTED_PROXY] = peer in self.rewrite.trusted_hosts
        await self.rewrite(scope, receive, send)  # type: ignore[arg-type]


def from_trusted_proxy(connection: Connection) -> bool:
    """Whether the connection's peer is a proxy FORWARDED_ALLOW_IPS lists (none by default)."""
    return bool(connection.scope.get("state", {}).get(FROM_TRUSTED_PROXY, False))


def forwarded_host(value: str) -> str | None:
    """The host[:port] an X-Forwarded-Host names (its first entry), or None when it is not one
    (a bad value is ignored: the request's own Host is used)."""
    value = value.split(",")[0].strip()
    if len(value) > 260 or not _HOST.fullmatch(value) or malformed_host(value):
        return None
    return value


def public_base(connection: Connection) -> str:
    """scheme://host[/prefix] as the client wrote it. The scheme is the connection's, which a
    listed proxy's X-Forwarded-Proto has set; the host is the Host header, which the Host check
    has screened, or a listed proxy's valid X-Forwarded-Host; the prefix a listed proxy's valid
    X-Forwarded-Prefix. A client's own X-Forwarded-* headers change nothing."""
    scheme, host, prefix = connection.url.scheme, connection.headers.get("host") or connection.url.netloc, ""
    if from_trusted_proxy(connection):
        host = forwarded_host(connection.headers.get("x-forwarded-host", "")) or host
        given = connection.headers.get("x-forwarded-prefix", "").split(",")[0].strip().rstrip("/")
        prefix = given if _PREFIX.fullmatch(given) and not given.startswith("//") else ""
    return f"{scheme}://{host}{prefix}"
