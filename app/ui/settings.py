"""Settings: the operator-editable values (batch limits, retry policy), validated, resettable;
and retention: what is purged when, and the operator's "purge now"."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template

from app.ui.render import HTML, done
from app.web.auth import admin_only
from app.web.http import HttpRequest
from app.web.state import app_state

CSRF_FIELD = "_csrf_token"
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


class SettingsPages(Controller):
    path = "/settings"
    # Shared by every team: an admin key's alone.
    guards = [admin_only]
    opt = {"admin_action": "change settings"}

    @get("/")
    async def show(self, state: State) -> Any:
        app = app_state(state)
        rows = await app.effective.editable()
        context = {"rows": rows, "retention_days": app.effective.current.retention_days}
        return Template(template_name="settings.html", context=context, media_type=HTML)

    @post("/")
    async def save(self, request: HttpRequest, state: State, data: Form) -> Any:
        # The form's CSRF field is the middleware's, not a setting.
        await app_state(state).actions.save_settings({k: v for k, v in data.items() if k != CSRF_FIELD})
        return done(request, "Settings saved; they apply now.", "/settings")

    @post("/reset")
    async def reset(self, request: HttpRequest, state: State) -> Any:
        await app_state(state).actions.reset_settings()
        return done(
            request, "Settings reset to the defaults from the environment.", "/settings", redirect=True
        )

    @post("/purge")
    async def purge(self, request: HttpRequest, state: State, data: Form) -> Any:
        purged = await app_state(state).actions.purge(data.get("older_than_days"))
        files = f", {purged.files} files" if purged.files else ""
        message = (
            f"Purged {purged.batches} batches and {purged.requests} requests{files} that ended more "
            f"than {purged.days} days ago, with their deliveries and events."
        )
        return done(request, message + (" More remain: purge again." if purged.more else ""), "/settings")
