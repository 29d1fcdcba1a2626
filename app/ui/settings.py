"""Settings: the operator-editable values (batch limits, retry policy), validated, resettable."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template

from app.core.runtime import settings as overrides
from app.ui.render import HTML, HttpRequest, done

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


class SettingsPages(Controller):
    path = "/settings"

    @get("/")
    async def show(self, state: State) -> Any:
        stored = await overrides.load(state.db)
        effective = overrides.apply(state.settings, stored)
        rows = [
            {
                "name": e.name,
                "group": e.group,
                "help": e.help,
                "value": overrides.shown(getattr(effective, e.name)),
                "default": overrides.shown(getattr(state.settings, e.name)),
                "json": e.json,
                "overridden": e.name in stored,
            }
            for e in overrides.EDITABLE
        ]
        return Template(template_name="settings.html", context={"rows": rows}, media_type=HTML)

    @post("/")
    async def save(self, request: HttpRequest, state: State, data: Form) -> Any:
        await overrides.save(state.db, state.settings, data)
        if state.worker:
            await state.worker.refresh_settings()
        return done(request, "Settings saved; they apply now.", "/settings")

    @post("/reset")
    async def reset(self, request: HttpRequest, state: State) -> Any:
        await overrides.reset(state.db)
        if state.worker:
            await state.worker.refresh_settings()
        return done(
            request, "Settings reset to the defaults from the environment.", "/settings", redirect=True
        )
