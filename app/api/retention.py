"""Native API: the operator's "purge now" (retention; the UI has the same button)."""

from __future__ import annotations

from typing import Annotated

from litestar import post
from litestar.datastructures import State
from litestar.params import QueryParameter
from litestar.status_codes import HTTP_200_OK

from app.api.errors import documented_errors
from app.api.schemas import PurgedOut
from app.core.retention import MAX_DAYS
from app.web.auth import admin_only
from app.web.state import app_state


@post(
    "/purge",
    status_code=HTTP_200_OK,
    summary="Purge now: delete ended batches and requests older than older_than_days (default "
    "RETENTION_DAYS), with everything they own, never one with a result still to deliver",
    responses=documented_errors({400: "older_than_days is not 1 to 36500 (or another parameter is bad)"}),
    operation_id="purge",
    tags=["retention"],
    guards=[admin_only],
    opt={"admin_action": "purge"},
)
async def purge(
    state: State, older_than_days: Annotated[int | None, QueryParameter(ge=1, le=MAX_DAYS)] = None
) -> PurgedOut:
    purged = await app_state(state).actions.purge(older_than_days)
    return PurgedOut(purged.days, purged.batches, purged.requests, purged.files, purged.more)
