"""Settings: the operator-editable values (batch limits, retry policy), validated, resettable."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template

from app.ui.render import HTML, HttpRequest, done

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


class SettingsPages(Controller):
    path = "/settings"

    @get("/")
    async def show(self, state: State) -> Any:
        rows = await state.runtime.editable()
        return Template(template_name="settings.html", context={"rows": rows}, media_type=HTML)

    @post("/")
    async def save(self, request: HttpRequest, state: State, data: Form) -> Any:
        await state.actions.save_settings(data)
        return done(request, "Settings saved; they apply now.", "/settings")

    @post("/reset")
    async def reset(self, request: HttpRequest, state: State) -> Any:
        await state.actions.reset_settings()
        return done(
            request, "Settings reset to the defaults from the environment.", "/settings", redirect=True
        )
