"""What screens the HTTP faces beyond API keys: the Host header check, and the UI's signed session
and CSRF cookies. Built once per app from the settings (see app.asgi)."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase

from litestar.config.csrf import CSRFConfig
from litestar.enums import ScopeType
from litestar.exceptions import ClientException
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.middleware.session import SessionMiddleware
from litestar.middleware.session.client_side import ClientSideSessionBackend, CookieBackendConfig
from litestar.types import ASGIApp, Middleware, Receive, Scope, Send

from app.core.ui_sessions import LIFETIME
from app.ground.config import Settings, parse_patterns
from app.web.http import check_readable_text, header
from app.web.state import app_state

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether a bind address (or a Host name) is reachable from this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def answered_hosts(settings: Settings) -> tuple[str, ...]:
    """The Host patterns answered: ALLOWED_HOSTS, or by default the loopback names when the
    server listens on loopback (so a DNS-rebinding page cannot reach it), else any host."""
    if configured := tuple(host.lower() for host in parse_patterns(settings.allowed_hosts)):
        return configured
    return LOOPBACK_NAMES if is_loopback(settings.host) else ("*",)


def host_name(header: str) -> str:
    """The name in a Host header, without its port: `[::1]:4000` → `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def malformed_host(header: str) -> str | None:
    """Why a Host header cannot be a host and port (a port that is not a number from 0 to
    65535), or None. Litestar parses the port when it builds a request's URL, which the UI's
    session and CSRF middleware do before any route runs: a bad one must be a 400, not a 500."""
    header = header.strip()
    port = header.rsplit("]", 1)[1] if header.startswith("[") and "]" in header else header
    if port.count(":") != 1:
        return None  # no port (or a bare IPv6 address, which Litestar does not split)
    digits = port.split(":", 1)[1]
    if digits and (not digits.isascii() or not digits.isdigit() or int(digits) > 65535):
        return f"the Host header's port {digits[:20]!r} is not a number from 0 to 65535"
    return None


class HostRefused(ClientException):
    """400: a Host header this server does not answer to (ALLOWED_HOSTS)."""


class ScreenRequests:
    """The app-wide screen: the Host header is an allowed host, the path and query are text.

    Pure ASGI rather than a guard (Litestar copies the route handler for every guard it calls on
    every request) or an ASGIMiddleware (its wrapper and an ASGIConnection per request were 5%
    of intake's CPU). Litestar puts it inside the matched route's stack, so what it raises is
    answered by that route's error handlers, as a guard's would be.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            check_host(scope)
            check_readable_text(scope)
        await self.app(scope, receive, send)


def check_host(scope: Scope) -> None:
    """Refuse (400) a request whose Host header is not an allowed host (ALLOWED_HOSTS)."""
    allowed = app_state(scope["litestar_app"].state).allowed_hosts
    if (why := host_refusal(header(scope, b"host") or "", allowed)) is not None:
        raise HostRefused(detail=why)


# Cached: clients send the same Host again and again, and checking it was 3% of intake's CPU time.
@functools.lru_cache(maxsize=256)
def host_refusal(given: str, allowed: tuple[str, ...]) -> str | None:
    """Why a Host header `given` is refused where `allowed` are the hosts answered, or None."""
    if (why := malformed_host(given)) is not None:
        return f"Bad Host header: {why}."
    if "*" in allowed:
        return None
    name = host_name(given)
    if not any(fnmatchcase(name, pattern) for pattern in allowed):
        return f"Host {name!r} is not served here: add it to ALLOWED_HOSTS."
    return None


@dataclass(frozen=True)
class UiCookies:
    """The UI's signed session cookie (it carries only the token of a server-side session, see
    app.core.ui_sessions) and its CSRF protection, sharing one secret."""

    session: CookieBackendConfig
    csrf: CSRFConfig

    @classmethod
    def of(cls, settings: Settings) -> UiCookies:
        secret = settings.session_secret
        if secret is None:
            log.info("SESSION_SECRET is not set: UI logins last until this process stops")
            secret = secrets.token_hex(32)
        key = hashlib.sha256(b"batchgate-session:" + secret.encode()).digest()
        session = CookieBackendConfig(
            secret=key,
            key="batchgate_session",
            max_age=int(LIFETIME.total_seconds()),  # the row ends it sooner (app.core.ui_sessions)
            httponly=True,
            samesite="lax",
            secure=settings.ui_cookie_secure,
        )
        csrf = CSRFConfig(
            secret=hashlib.sha256(b"batchgate-csrf:" + secret.encode()).hexdigest(),
            cookie_name="batchgate_csrf",
            cookie_httponly=True,  # the token reaches the page through the template, not JS
            cookie_samesite="lax",
            cookie_secure=settings.ui_cookie_secure,
        )
        return cls(session, csrf)

    @property
    def middleware(self) -> list[Middleware]:
        """The UI router's middleware: the session, then CSRF inside it (as Litestar orders them
        when the app is given `csrf_config`). Only the UI's routes carry them: the machine routes
        take a key in a header, never a cookie, so CSRF cannot ride on them, and an app-wide
        CSRFMiddleware with a session middleware ran on every intake to skip it by a path match
        (about 2% of intake's CPU time)."""
        return [
            DefineMiddleware(UiSession, config=self.session),
            DefineMiddleware(CSRFMiddleware, config=self.csrf),
        ]


class UiSession(SessionMiddleware[ClientSideSessionBackend]):
    """Litestar's session middleware, given its config rather than its backend: a router's
    middleware is deep-copied when the router is registered, and the backend's cipher cannot be."""

    def __init__(self, app: ASGIApp, config: CookieBackendConfig) -> None:
        super().__init__(app, ClientSideSessionBackend(config))
