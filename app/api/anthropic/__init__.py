"""The Anthropic face: Message Batches as the official SDK calls them. The SDK appends
/v1/messages/batches to its base_url, so each base_url a user may write is a mount: the server
(/v1), the face's prefix /api/anthropic (/api/anthropic/v1), and either of them with /v1 written
out (/v1/v1, /api/anthropic/v1/v1), as the OpenAI SDK's base_url is written.

Each mount is a router carrying its own error handlers (Anthropic's error shape) and its mount
path, which results_url is built under.
"""

from __future__ import annotations

from litestar import Router

from app.api.anthropic.batches import MessageBatchController
from app.api.anthropic.errors import EXCEPTION_HANDLERS
from app.api.request_ids import request_id_header
from app.web.auth import RequireApiKey

MOUNTS = ("/v1", "/api/anthropic/v1", "/v1/v1", "/api/anthropic/v1/v1")


def _router(mount: str) -> Router:
    return Router(
        path=mount,
        route_handlers=[MessageBatchController],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[RequireApiKey],
        opt={"mount": mount, **request_id_header("request-id")},
        # One mount is documented; the others are the same API under other prefixes.
        include_in_schema=mount == MOUNTS[0],
    )


ANTHROPIC_ROUTERS = [_router(mount) for mount in MOUNTS]
