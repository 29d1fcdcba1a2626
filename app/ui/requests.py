"""Requests: the list, one request with its result and delivery trail, and the actions on it."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromQuery

from app.core.read import queries
from app.core.rules import states
from app.core.rules.errors import InvalidInput, Problem
from app.core.rules.numbers import whole_number
from app.ui.render import done, list_page, page
from app.web.auth import caller_of
from app.web.http import ROW_ID_MAX, HttpRequest, RowCursor, RowId
from app.web.state import app_state

STATUSES = list(states.REQUEST_TRANSITIONS)
DELIVERY_STATUSES = list(states.DELIVERY_TRANSITIONS)
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


class RequestPages(Controller):
    path = "/requests"

    @get("/")
    async def index(
        self,
        listing: NamedDependency[dict[str, Any]],
        request: HttpRequest,
        state: State,
        match: FromQuery[Literal["prefix", "contains"]] = "prefix",
        delivery_status: FromQuery[str] = "",
        batch_id: FromQuery[str] = "",
        model: FromQuery[str] = "",
        sort: FromQuery[Literal["newest", "oldest", "status", "custom_id"]] = "newest",
        owner: FromQuery[str] = "",
    ) -> Any:
        # Typed into a text box: anything but a batch number (ASCII digits, an int64) filters nothing.
        app = app_state(state)
        batch = whole_number(batch_id.strip(), ROW_ID_MAX)
        query = queries.RequestQuery(
            **listing,
            match=match,
            delivery_status=delivery_status,
            batch_id=batch,
            model=model,
            sort=sort,
            owner=owner or None,
        )
        result = await queries.request_page(app.db, query, caller_of(request))
        caller = caller_of(request)
        _, models, owners = await queries.batch_choices(app.db, caller)
        choices = {"statuses": STATUSES, "delivery_statuses": DELIVERY_STATUSES, "models": models}
        choices |= {"owners": owners if caller.admin else []}
        return list_page(request, "request", query, result, **choices)

    @get("/{request_id:int}")
    async def show(self, request: HttpRequest, state: State, request_id: RowId) -> Any:
        detail = await queries.request_detail(app_state(state).db, request_id, caller_of(request))
        return page(request, "request.html", "_request_live.html", d=detail)

    @post("/{request_id:int}/redeliver")
    async def redeliver(
        self, request: HttpRequest, state: State, request_id: RowId, delivery: RowCursor = None
    ) -> Any:
        # `delivery`: one destination's delivery (row id) of a request that fans out; else all.
        actions = app_state(state).actions
        queued = await actions.redeliver_request(
            request_id, caller_of(request), via="ui", delivery_id=delivery
        )
        ids = ", ".join(delivery.public_id for delivery in queued)
        message = f"Delivery {ids} queued again." if len(queued) == 1 else f"Deliveries {ids} queued again."
        return done(request, message, _back(request, request_id))

    @post("/{request_id:int}/cancel")
    async def cancel(self, request: HttpRequest, state: State, request_id: RowId) -> Any:
        cancelled = await app_state(state).actions.cancel_request(request_id, caller_of(request), via="ui")
        return done(request, f"Request {cancelled.custom_id} cancelled.", _back(request, request_id))

    @post("/{request_id:int}/delivery")
    async def change_delivery(self, request: HttpRequest, state: State, request_id: RowId, data: Form) -> Any:
        try:
            config = json.loads(data.get("delivery_config", ""))
        except ValueError as exc:
            raise InvalidInput(
                Problem("invalid_json", "Not JSON", f"The delivery config is not valid JSON: {exc}.")
            ) from None
        new = await app_state(state).actions.change_delivery(request_id, caller_of(request), config, via="ui")
        saved = new["type"] if isinstance(new, dict) else f"{len(new)} destinations"
        return done(request, f"Delivery config saved: {saved}.", f"/requests/{request_id}")


def _back(request: HttpRequest, request_id: int) -> str:
    current = request.headers.get("hx-current-url") or request.headers.get("referer") or ""
    on_detail = current.split("?")[0].rstrip("/").endswith(f"/requests/{request_id}")
    return f"/requests/{request_id}" if on_detail else "/requests"
