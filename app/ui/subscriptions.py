"""Event subscriptions: the list, a form to subscribe a webhook URL to event types (with filters
on model, backend and origin), and delete."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template

from app.core.actions import subscriptions
from app.core.subscriptions import FILTERS, SUBSCRIBABLE
from app.ui.render import HTML, done
from app.web.auth import admin_only
from app.web.http import HttpRequest, RowId
from app.web.state import app_state

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


def _names(text: str) -> list[str]:
    """A form field of comma- or space-separated names."""
    return [name for name in text.replace(",", " ").split() if name]


class SubscriptionPages(Controller):
    path = "/subscriptions"
    # Shared by every team: an admin key's alone.
    guards = [admin_only]
    opt = {"admin_action": "manage subscriptions"}

    @get("/")
    async def show(self, state: State) -> Any:
        context = {
            "rows": await subscriptions.listing(app_state(state).db),
            "types": sorted(SUBSCRIBABLE),
            "filters": FILTERS,
        }
        return Template(template_name="subscriptions.html", context=context, media_type=HTML)

    @post("/")
    async def create(self, request: HttpRequest, state: State, data: Form) -> Any:
        app = app_state(state)
        fields = {
            "url": data.get("url", ""),
            "event_types": _names(data.get("event_types", "")),
            "filters": {name: _names(data.get(name, "")) for name in FILTERS},
            "description": data.get("description", ""),
        }
        row = await subscriptions.create(app.db, await app.effective.fresh(), fields)
        return done(request, f"Subscription {row.id} created.", "/subscriptions", redirect=True)

    @post("/{subscription_id:int}/delete")
    async def remove(self, request: HttpRequest, state: State, subscription_id: RowId) -> Any:
        await subscriptions.delete(app_state(state).db, subscription_id)
        return done(request, f"Subscription {subscription_id} deleted.", "/subscriptions", redirect=True)
