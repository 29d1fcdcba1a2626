"""API keys: the ones from API_KEYS (counted, never shown) and the ones created here, each shown
once at creation, then only by name, prefix and last use; revoke ends a key (and its sessions)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template

from app.core import key_store
from app.ui.login import session_key, start_session
from app.ui.render import HTML, done
from app.web.http import HttpRequest, RowId
from app.web.state import AppState, app_state

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


class KeyPages(Controller):
    path = "/keys"

    @get("/")
    async def show(self, state: State) -> Any:
        return await _page(app_state(state))

    @post("/")
    async def create(self, request: HttpRequest, state: State, data: Form) -> Any:
        app = app_state(state)
        row, key = await key_store.create(app.db, app.api_keys, data.get("name", ""))
        if await session_key(request) is None:
            # The first key closes the UI too: keep its creator logged in, with that key.
            await start_session(request, row.digest)
        # The one time the key is shown: the answer is not cached and the page says so.
        return await _page(app, created=(row, key), headers={"Cache-Control": "no-store"})

    @post("/{key_id:int}/revoke")
    async def revoke(self, request: HttpRequest, state: State, key_id: RowId) -> Any:
        app = app_state(state)
        row = await key_store.revoke(app.db, app.api_keys, key_id)
        return done(request, f"Key {row.name!r} revoked.", "/keys", redirect=True)


async def _page(app: AppState, created: Any = None, headers: dict[str, str] | None = None) -> Template:
    context = {
        "rows": await key_store.listing(app.db),
        "fixed": len(app.api_keys.fixed),
        "created": created,
    }
    return Template(template_name="keys.html", context=context, headers=headers, media_type=HTML)
