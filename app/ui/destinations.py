"""Destinations: where deliveries go, each with its circuit breaker, its waiting deliveries and
its limits; the operator sets limits, pauses and resumes."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body

from app.core.read import destinations
from app.core.rules.errors import InvalidInput, Problem
from app.ui.render import done, page
from app.web.auth import admin_only
from app.web.http import HttpRequest, RowId
from app.web.state import app_state

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


def _number(form: dict[str, str], name: str, kind: type[int] | type[float]) -> int | float | None:
    """A form field as a number; empty means the default (None)."""
    text = form.get(name, "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise InvalidInput(
            Problem(f"invalid_{name}", "Invalid number", f"{name} is not a number: {text!r}")
        ) from None


class DestinationPages(Controller):
    path = "/destinations"
    # Shared by every team: an admin key's alone.
    guards = [admin_only]
    opt = {"admin_action": "manage destinations"}

    @get("/")
    async def show(self, request: HttpRequest, state: State) -> Any:
        app = app_state(state)
        rows = await destinations.listing(app.db)
        settings = app.effective.current
        return page(request, "destinations.html", "_destinations_live.html", rows=rows, settings=settings)

    @post("/")
    async def define(self, request: HttpRequest, state: State, data: Form) -> Any:
        app = app_state(state)
        row = await app.actions.set_destination_limits(
            data.get("destination", ""),
            _number(data, "concurrency", int),
            _number(data, "rate_per_second", float),
        )
        return done(request, f"Limits of {row.key} saved.", "/destinations")

    @post("/{destination_id:int}/pause")
    async def pause(self, request: HttpRequest, state: State, destination_id: RowId) -> Any:
        row = await app_state(state).actions.pause_destination(destination_id, via="ui")
        return done(request, f"{row.key} paused: its deliveries wait until you resume it.", "/destinations")

    @post("/{destination_id:int}/resume")
    async def resume(self, request: HttpRequest, state: State, destination_id: RowId) -> Any:
        row = await app_state(state).actions.resume_destination(destination_id, via="ui")
        return done(request, f"{row.key} resumed.", "/destinations")
