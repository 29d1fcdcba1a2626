"""Native API: teams (owners) of API keys, their usage and limits (/api/owners). A team's key
reads only its own team; setting limits is an admin's (docs/security.md, "Teams")."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get, put
from litestar.datastructures import State
from litestar.params import Body, PathParameter

from app.api.errors import documented_errors
from app.core import owner_limits
from app.core.rules.owners import NAME_MAX
from app.web.auth import admin_only, caller_of
from app.web.http import ROW_ID_MAX, HttpRequest
from app.web.state import app_state

TeamName = Annotated[
    str, PathParameter(min_length=1, max_length=NAME_MAX, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]


class OwnerOut(msgspec.Struct):
    owner: str  # '' is the work no team owns (an admin key's, or RabbitMQ intake's)
    requests: int
    unfinished: int
    enqueued_tokens: int  # estimated: body bytes / 4
    prompt_tokens: int
    completion_tokens: int
    spend_usd: float  # its batches on batch APIs still kept, at batch prices
    max_enqueued_tokens: int | None
    budget_usd: float | None


class OwnerListOut(msgspec.Struct):
    data: list[OwnerOut]


class OwnerLimitsIn(msgspec.Struct):
    # None: no limit; at most what its BIGINT column holds (more was a 500).
    max_enqueued_tokens: Annotated[int, msgspec.Meta(ge=1, le=ROW_ID_MAX)] | None = None
    budget_usd: Annotated[float, msgspec.Meta(ge=0)] | None = None  # None: no budget


def owner_out(usage: owner_limits.Usage) -> OwnerOut:
    return OwnerOut(**{field: getattr(usage, field) for field in OwnerOut.__struct_fields__})


class OwnerController(Controller):
    path = "/owners"
    tags = ["owners"]

    @get("/", summary="Teams with their usage and limits (a team's key: its own)", operation_id="listOwners")
    async def list(self, request: HttpRequest, state: State) -> OwnerListOut:
        app = app_state(state)
        usage = await owner_limits.usage(app.db, await app.effective.fresh(), caller_of(request))
        return OwnerListOut([owner_out(u) for u in usage])

    @get(
        "/{name:str}",
        summary="A team's usage and limits",
        responses=documented_errors({404: "No such team (or another team's)"}),
        operation_id="getOwner",
    )
    async def read(self, name: TeamName, request: HttpRequest, state: State) -> OwnerOut:
        app = app_state(state)
        settings = await app.effective.fresh()
        return owner_out(await owner_limits.usage_of(app.db, settings, caller_of(request), name))

    @put(
        "/{name:str}/limits",
        summary="Set a team's limits (null: none); checked at intake",
        responses=documented_errors({403: "Not an admin key", 422: "A limit is not valid"}),
        operation_id="setOwnerLimits",
        guards=[admin_only],
        opt={"admin_action": "set a team's limits"},
    )
    async def set_limits(
        self, name: TeamName, data: Annotated[OwnerLimitsIn, Body()], request: HttpRequest, state: State
    ) -> OwnerOut:
        app = app_state(state)
        await owner_limits.set_limits(app.db, name, data.max_enqueued_tokens, data.budget_usd)
        settings = await app.effective.fresh()
        return owner_out(await owner_limits.usage_of(app.db, settings, caller_of(request), name))
