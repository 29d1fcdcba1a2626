"""The Anthropic face: Message Batches as the official SDK calls them, mounted at /v1 (where the
SDK's base_url points) and at /api/anthropic/v1 (beside the native API, behind one prefix).

Each mount is a router carrying its own error handlers (Anthropic's error shape) and its mount
path, which results_url is built under.
"""

from __future__ import annotations

from litestar import Router

from app.api.anthropic.batches import MessageBatchController
from app.api.anthropic.errors import EXCEPTION_HANDLERS
from app.api.keys import RequireApiKey

MOUNTS = ("/v1", "/api/anthropic/v1")


def _router(mount: str) -> Router:
    return Router(
        path=mount,
        route_handlers=[MessageBatchController],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[RequireApiKey()],
        opt={"mount": mount},
        # One mount is documented; the other is the same API under another prefix.
        include_in_schema=mount == MOUNTS[0],
    )


ANTHROPIC_ROUTERS = [_router(mount) for mount in MOUNTS]
