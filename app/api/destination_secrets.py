"""Native API: a webhook destination's own signing secret: rotate it (with an overlap during
which the old one signs too), fall back to the global one, and see what is set (never the secret
itself, which only the rotation's answer carries). Addressed by the destination's row id, or by
a webhook URL or origin (`https://host:443`), which makes the row when it has none yet."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.datastructures import State
from litestar.handlers import HTTPRouteHandler
from litestar.params import Body, QueryParameter
from litestar.status_codes import HTTP_200_OK

from app.api.errors import documented_errors
from app.core.destinations import secrets
from app.web.auth import admin_only
from app.web.http import RowId
from app.web.state import app_state

NO_STORE = {"Cache-Control": "no-store"}  # the answer carries a secret
NO_SUCH_DESTINATION = {404: "No such destination"}
BAD_INPUT = {
    400: "Body is not JSON, or a field has the wrong type",
    422: "invalid_secret, invalid_overlap, invalid_destination or not_a_webhook_destination",
}
Destination = Annotated[
    str, QueryParameter(description="A webhook URL or origin, e.g. https://example.com:443", min_length=1)
]
Overlap = Annotated[
    int | None,
    QueryParameter(description="Seconds the removed secret keeps signing (0 to 2592000; default 0)"),
]


class RotateIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A rotation: the new secret (left out: one is generated) and the overlap."""

    secret: str | None = None  # `whsec_` and the base64 of 24 to 64 bytes
    overlap_seconds: float | None = None  # 0 to 2592000; default 86400


class RotateByKeyIn(RotateIn, forbid_unknown_fields=True, kw_only=True):
    """The same, naming the destination by a webhook URL or origin."""

    destination: str


# Bodies that refuse unknown fields (400): app.api.document says so in the OpenAPI document,
# which Litestar writes without additionalProperties.
CLOSED_BODIES = (RotateIn, RotateByKeyIn)


class SecretStateOut(msgspec.Struct, kw_only=True):
    destination_id: int
    destination: str
    signing_secret: Literal["own", "global"]
    secret_prefix: str | None
    encrypted: bool
    previous_secret: Literal["own", "global"] | None
    previous_secret_until: datetime | None


class RotatedOut(SecretStateOut, kw_only=True):
    secret: str  # shown this once


def _out(state: secrets.SecretState) -> SecretStateOut:
    return SecretStateOut(**{field: getattr(state, field) for field in SecretStateOut.__struct_fields__})


def _rotated(rotated: secrets.Rotated) -> Response[RotatedOut]:
    body = RotatedOut(secret=rotated.secret, **msgspec.structs.asdict(_out(rotated.state)))
    return Response(body, status_code=HTTP_200_OK, headers=NO_STORE)


_BODY = Body(
    description="secret (left out: one is generated) and overlap_seconds (default 86400), both optional"
)
_BY_KEY = Body(description="destination (a webhook URL or origin), secret and overlap_seconds as above")


def _route(
    verb: Callable[..., HTTPRouteHandler], path: str, operation_id: str, summary: str
) -> HTTPRouteHandler:
    """One route of the controller: 200, its errors in the native API's shape (404 for an id)."""
    by_id = "{destination_id" in path
    errors = {**(NO_SUCH_DESTINATION if by_id else {}), **({} if verb is get else BAD_INPUT)}
    return verb(
        path,
        status_code=HTTP_200_OK,
        summary=summary,
        responses=documented_errors(errors),
        operation_id=operation_id,
    )


class DestinationSecretController(Controller):
    path = "/destinations"
    # Shared by every team: an admin key's alone.
    guards = [admin_only]
    opt = {"admin_action": "manage destinations"}
    tags = ["destinations"]

    @_route(
        get,
        "/{destination_id:int}/secret",
        "getDestinationSecret",
        "Whether a destination signs with its own secret, its first characters, and until when "
        "the previous one signs too (never the secret)",
    )
    async def read(self, destination_id: RowId, state: State) -> SecretStateOut:
        app = app_state(state)
        return _out(await secrets.read(app.db, await app.effective.fresh(), destination_id))

    @_route(
        post,
        "/{destination_id:int}/secret/rotate",
        "rotateDestinationSecret",
        "Give a webhook destination a new signing secret; the one it replaces signs too for "
        "overlap_seconds. Answers the new secret, this once",
    )
    async def rotate(
        self, destination_id: RowId, state: State, data: Annotated[RotateIn | None, _BODY] = None
    ) -> Response[RotatedOut]:
        return await self._rotate(state, data or RotateIn(), destination_id)

    @_route(
        post,
        "/secret/rotate",
        "rotateDestinationSecretByKey",
        "The same, for the destination a webhook URL or origin names (`destination`, required); "
        "its row is made when it has none",
    )
    async def rotate_by_key(
        self, state: State, data: Annotated[RotateByKeyIn, _BY_KEY]
    ) -> Response[RotatedOut]:
        return await self._rotate(state, data, data.destination)

    @_route(
        delete,
        "/{destination_id:int}/secret",
        "clearDestinationSecret",
        "Sign a destination's deliveries with the global secret again (its own one signs too for "
        "overlap_seconds, default 0)",
    )
    async def clear(
        self, destination_id: RowId, state: State, overlap_seconds: Overlap = None
    ) -> SecretStateOut:
        return await self._clear(state, destination_id, overlap_seconds)

    @_route(
        delete,
        "/secret",
        "clearDestinationSecretByKey",
        "The same, for the destination a webhook URL or origin names",
    )
    async def clear_by_key(
        self, state: State, destination: Destination, overlap_seconds: Overlap = None
    ) -> SecretStateOut:
        return await self._clear(state, destination, overlap_seconds)

    async def _rotate(self, state: State, given: RotateIn, destination: int | str) -> Response[RotatedOut]:
        app = app_state(state)
        settings = await app.effective.fresh()
        rotated = await secrets.rotate(app.db, settings, destination, given.secret, given.overlap_seconds)
        return _rotated(rotated)

    async def _clear(
        self, state: State, destination: int | str, overlap_seconds: int | None
    ) -> SecretStateOut:
        app = app_state(state)
        settings = await app.effective.fresh()
        return _out(await secrets.clear(app.db, settings, destination, overlap_seconds))
