"""The OpenAI face: /v1/files and /v1/batches as the official SDKs call them, answering OpenAI's
objects and errors. Mounted at /v1 and at /api/openai/v1 (the PHP local-batch-api's path)."""

from __future__ import annotations

from litestar import Router

from app.api.keys import RequireApiKey
from app.api.openai.batches import BatchController
from app.api.openai.errors import EXCEPTION_HANDLERS
from app.api.openai.files import FileController


def _router(path: str, in_schema: bool) -> Router:
    return Router(
        path=path,
        route_handlers=[FileController, BatchController],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[RequireApiKey()],
        include_in_schema=in_schema,
    )


# The second mount is left out of the OpenAPI document: the same operations, twice, would clash.
OPENAI_ROUTERS = [_router("/v1", True), _router("/api/openai/v1", False)]
