"""The guard every /api and /v1 router carries: with API_KEYS set, a request without a valid key
is refused with 401 before its handler runs (or reads its body). Each face's error handlers turn
`KeyRefused` into its own error shape."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler

from app.core.access import ApiKeys, Refusal
from app.http import no_retry_headers, presented_keys

MESSAGES = {
    Refusal.MISSING: "No API key given: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
    # The key given is never echoed: answers and logs must not carry a secret, even a wrong one.
    Refusal.WRONG: "The API key given is not valid.",
}


class KeyRefused(NotAuthorizedException):
    """401: the request carries no API key, or none that is configured."""

    def __init__(self, refusal: Refusal) -> None:
        # A retry with the same key cannot succeed, so the SDKs are told not to try.
        headers = {"www-authenticate": "Bearer", **no_retry_headers(401)}
        super().__init__(detail=MESSAGES[refusal], headers=headers)
        self.refusal = refusal


# async though it awaits nothing: Litestar runs a sync guard in a worker thread, per request.
async def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Let the request through when no keys are configured or it carries a valid one."""
    keys: ApiKeys = connection.app.state.api_keys
    if not keys.required:
        return
    headers = connection.headers
    refusal = keys.check(presented_keys(headers.get("authorization"), headers.get("x-api-key")))
    if refusal is not None:
        raise KeyRefused(refusal)
