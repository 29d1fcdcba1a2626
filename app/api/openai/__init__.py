"""The OpenAI face: /v1/files and /v1/batches as the official SDKs call them, answering OpenAI's
objects and errors. Mounted at /v1, at /api/openai/v1 (the PHP local-batch-api's path) and at
/api/openai: the SDK appends /files and /batches to its base_url as given, so each base_url a user
may write (the server's /v1, the face's prefix with or without /v1) must be a mount."""

from __future__ import annotations

from litestar import Router

from app.api.openai.batches import BatchController
from app.api.openai.errors import EXCEPTION_HANDLERS
from app.api.openai.files import FileController
from app.api.request_ids import request_id_header
from app.web.auth import RequireApiKey


def _router(path: str, in_schema: bool) -> Router:
    return Router(
        path=path,
        route_handlers=[FileController, BatchController],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[RequireApiKey],
        opt=request_id_header("x-request-id"),
        include_in_schema=in_schema,
    )


MOUNTS = ("/v1", "/api/openai/v1", "/api/openai")

# Only the first mount is in the OpenAPI document: the same operations, twice, would clash.
OPENAI_ROUTERS = [_router(mount, mount == MOUNTS[0]) for mount in MOUNTS]
