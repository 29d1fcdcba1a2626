"""The check every /api and /v1 router carries: with API_KEYS set, a request without a valid key
is refused with 401 before its handler runs (or reads its body). Each face's error handlers turn
`KeyRefused` into its own error shape."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from app.core.rules.access import Refusal
from app.core.rules.owners import ADMIN, Caller
from app.web.http import header, no_retry_headers, presented_keys
from app.web.state import app_state

MESSAGES = {
    Refusal.MISSING: "No API key given: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
    # The key given is never echoed: answers and logs must not carry a secret, even a wrong one.
    Refusal.WRONG: "The API key given is not valid.",
}


CALLER = "batchgate.caller"  # where the scope's state keeps who the request acts as
# A team no key can have (names start with a letter or digit): it owns no row, so it sees nothing.
NOBODY = Caller("-")


class KeyRefused(NotAuthorizedException):
    """401: the request carries no API key, or none that is configured."""

    def __init__(self, refusal: Refusal) -> None:
        # A retry with the same key cannot succeed, so the SDKs are told not to try.
        headers = {"www-authenticate": "Bearer", **no_retry_headers(401)}
        super().__init__(detail=MESSAGES[refusal], headers=headers)
        self.refusal = refusal


class RequireApiKey:
    """Let the request through when no keys are configured or it carries a valid one.

    Pure ASGI rather than a guard (Litestar copies the route handler per guard per request) or an
    ASGIMiddleware (its wrapper costs every intake), as app.web.protection.ScreenRequests; it
    runs inside the matched route's stack, so its refusal gets that route's error handlers.
    Given to a router as the class: Litestar builds it around each route.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            keys = app_state(scope["litestar_app"].state).api_keys
            caller = ADMIN
            if keys.required:
                given = presented_keys(header(scope, b"authorization"), header(scope, b"x-api-key"))
                found = keys.check(given)
                if isinstance(found, Refusal):
                    raise KeyRefused(found)
                caller = found
            scope.setdefault("state", {})[CALLER] = caller
        await self.app(scope, receive, send)


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """Who the request acts as, as RequireApiKey (API) or the login guard (UI) found it. A route
    neither checked (none should ask) acts as nobody's team: the narrowest view, not the widest."""
    found = connection.scope.get("state", {}).get(CALLER)
    return found if isinstance(found, Caller) else NOBODY


# async though it awaits nothing: Litestar runs a sync guard in a worker thread, per request.
async def admin_only(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """The guard of the operator's routes (destinations, subscriptions, recoveries, retention,
    settings, keys): a team's key is refused (403 admin_only); they are shared by every team."""
    caller_of(connection).require_admin(str(handler.opt.get("admin_action", "do this")))


def team_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The team a checked request acts for; '' for an admin's, or one not checked (a public page)."""
    found = connection.scope.get("state", {}).get(CALLER)
    return found.owner if isinstance(found, Caller) else ""


def set_caller(connection: ASGIConnection[Any, Any, Any, Any], caller: Caller) -> None:
    connection.scope.setdefault("state", {})[CALLER] = caller
