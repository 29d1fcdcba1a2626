"""Recoveries: the list with live progress, and the forms that start a recover or a replay."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import FromQuery

from app.core.recoveries.ask import Asked
from app.core.recoveries.read import list_recoveries
from app.ui.render import done, page
from app.ui.settings import Form
from app.web.auth import admin_only
from app.web.http import HttpRequest, RowId
from app.web.state import app_state


def _times(data: dict[str, str]) -> dict[str, str]:
    """The form's since and until (a datetime-local input: a time without a zone, read as UTC)."""
    return {name: data[name].strip() for name in ("since", "until") if data.get(name, "").strip()}


def _told(asked: Asked) -> str:
    r = asked.recovery
    if not asked.created:
        return f"The same {r.kind} is already under way: #{r.id}, {r.done} of {r.total} done."
    return f"{r.kind.capitalize()} #{r.id} started: {r.total} to go."


class RecoveryPages(Controller):
    path = "/recoveries"
    # Shared by every team: an admin key's alone.
    guards = [admin_only]
    opt = {"admin_action": "run recoveries"}

    @get("/")
    async def index(self, request: HttpRequest, state: State, destination: FromQuery[str] = "") -> Any:
        # ?destination= fills in the recover form (a link from a destination to its recovery).
        rows = await list_recoveries(app_state(state).db, limit=100)
        return page(request, "recoveries.html", "_recoveries_live.html", rows=rows, destination=destination)

    @post("/")
    async def recover(self, request: HttpRequest, state: State, data: Form) -> Any:
        ask = {"kind": "recover", "destination": data.get("destination", "").strip(), **_times(data)}
        asked = await app_state(state).actions.ask_recovery(ask, via="ui")
        return done(request, _told(asked), "/recoveries")

    @post("/replay")
    async def replay(self, request: HttpRequest, state: State, data: Form) -> Any:
        ask: dict[str, Any] = {
            "kind": "replay",
            "delivery_config": {"type": "webhook", "webhook_url": data.get("webhook_url", "").strip()},
            **_times(data),
        }
        if batch := data.get("batch_id", "").strip():
            ask["batch_id"] = int(batch) if batch.isdigit() else batch  # not a number: told so
        asked = await app_state(state).actions.ask_recovery(ask, via="ui")
        return done(request, _told(asked), "/recoveries")

    @post("/{recovery_id:int}/cancel")
    async def cancel(self, request: HttpRequest, state: State, recovery_id: RowId) -> Any:
        await app_state(state).actions.cancel_recovery(recovery_id, via="ui")
        return done(request, f"Recovery #{recovery_id} cancelled.", "/recoveries")
