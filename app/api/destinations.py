"""Destinations: where deliveries go (a webhook origin, a RabbitMQ queue or exchange), with each
one's circuit breaker and limits; the operator overrides the limits, pauses and resumes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, get, post, put
from litestar.datastructures import State
from litestar.params import Body
from litestar.status_codes import HTTP_200_OK
from msgspec import Meta

from app.api.errors import documented_errors
from app.core.actions.destinations import CONCURRENCY_MAX, RATE_MAX
from app.core.destinations.rows import DESTINATION_PATTERN
from app.core.read import destinations
from app.core.read.destinations import DestinationView
from app.db.models import DestinationEvent
from app.web.auth import admin_only
from app.web.http import RowId
from app.web.state import app_state

NO_SUCH_DESTINATION = {404: "No such destination"}


class LimitsIn(msgspec.Struct):
    # None: DELIVERY_DESTINATION_CONCURRENCY / DELIVERY_DESTINATION_RATE.
    concurrency: Annotated[int, Meta(ge=1, le=CONCURRENCY_MAX)] | None = None
    rate_per_second: Annotated[float, Meta(ge=0, le=RATE_MAX)] | None = None


class DestinationIn(LimitsIn, kw_only=True):
    # A webhook URL or origin, or rabbitmq:queue/<name> or rabbitmq:exchange/<name>.
    destination: Annotated[str, Meta(pattern=DESTINATION_PATTERN, max_length=2048)]


class EventOut(msgspec.Struct):
    from_state: str | None
    to_state: str
    reason: str | None
    at: datetime
    worker: str | None


class DestinationOut(msgspec.Struct):
    id: int
    destination: str
    breaker: str  # closed, open (held) or probing
    consecutive_failures: int
    opened_at: datetime | None
    probe_at: datetime | None  # when an open breaker probes next; None while paused by an operator
    concurrency: int | None
    rate_per_second: float | None
    waiting: int
    failed: int
    events: list[EventOut] | None = None


class DestinationListOut(msgspec.Struct):
    data: list[DestinationOut]


def _out(view: DestinationView, events: list[DestinationEvent] | None = None) -> DestinationOut:
    fields = {name: getattr(view, name) for name in DestinationView.__dataclass_fields__}
    shown = (
        None
        if events is None
        else [EventOut(e.from_state, e.to_state, e.reason, e.at, e.worker) for e in events]
    )
    return DestinationOut(**fields, events=shown)


class DestinationController(Controller):
    path = "/destinations"
    # Shared by every team: an admin key's alone.
    guards = [admin_only]
    opt = {"admin_action": "manage destinations"}
    tags = ["destinations"]

    @get(
        "/",
        summary="Destinations with their circuit breaker, limits and waiting deliveries, held first",
        description="A destination is listed once an attempt to it failed or an operator set "
        "something on it. `breaker`: closed (sending), open (held: its deliveries wait, "
        "unattempted, until `probe_at`, or until resumed when `probe_at` is null), probing (one "
        "delivery is out to try it).",
        operation_id="listDestinations",
        responses=documented_errors(),
    )
    async def list(self, state: State) -> DestinationListOut:
        return DestinationListOut([_out(view) for view in await destinations.listing(app_state(state).db)])

    @post(
        "/",
        status_code=HTTP_200_OK,
        summary="Set a destination's limits, by its URL or key (made when new)",
        description="`concurrency` (sends at once) and `rate_per_second` (0: no limit) override "
        "DELIVERY_DESTINATION_CONCURRENCY and DELIVERY_DESTINATION_RATE; null restores the "
        "default. Every worker applies a change within 5 seconds.",
        operation_id="setDestination",
        responses=documented_errors({422: "Unknown destination, or a limit out of range"}),
    )
    async def define(self, state: State, data: Annotated[DestinationIn, Body()]) -> DestinationOut:
        app = app_state(state)
        row = await app.actions.set_destination_limits(
            data.destination, data.concurrency, data.rate_per_second
        )
        return _out((await destinations.detail(app.db, row.id))[0])

    @get(
        "/{destination_id:int}",
        summary="A destination with its latest breaker events",
        operation_id="getDestination",
        responses=documented_errors(NO_SUCH_DESTINATION),
    )
    async def read(self, state: State, destination_id: RowId) -> DestinationOut:
        return _out(*await destinations.detail(app_state(state).db, destination_id))

    @put(
        "/{destination_id:int}/limits",
        summary="Replace a destination's limits (null: the default)",
        operation_id="setDestinationLimits",
        responses=documented_errors({**NO_SUCH_DESTINATION, 422: "A limit out of range"}),
    )
    async def limits(
        self, state: State, destination_id: RowId, data: Annotated[LimitsIn, Body()]
    ) -> DestinationOut:
        app = app_state(state)
        await app.actions.set_destination_limits(destination_id, data.concurrency, data.rate_per_second)
        return _out(*await destinations.detail(app.db, destination_id))

    @post(
        "/{destination_id:int}/pause",
        status_code=HTTP_200_OK,
        summary="Hold a destination's deliveries until it is resumed",
        description="Its deliveries wait, unattempted (no attempt is counted while they wait); "
        "sends already in flight end as they do. `destination.paused` goes to "
        "BATCH_EVENTS_WEBHOOK_URL.",
        operation_id="pauseDestination",
        responses=documented_errors(NO_SUCH_DESTINATION),
    )
    async def pause(self, state: State, destination_id: RowId) -> DestinationOut:
        app = app_state(state)
        await app.actions.pause_destination(destination_id)
        return _out(*await destinations.detail(app.db, destination_id))

    @post(
        "/{destination_id:int}/resume",
        status_code=HTTP_200_OK,
        summary="Send a held destination's deliveries again (its breaker closes)",
        operation_id="resumeDestination",
        responses=documented_errors(NO_SUCH_DESTINATION),
    )
    async def resume(self, state: State, destination_id: RowId) -> DestinationOut:
        app = app_state(state)
        await app.actions.resume_destination(destination_id)
        return _out(*await destinations.detail(app.db, destination_id))
