"""API keys: the ones from API_KEYS (counted, never shown) and the ones created here, each shown
once at creation, then only by name, team, prefix and last use; revoke ends a key (and its
sessions). The teams' usage and limits are set here too (app.core.owner_limits)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Template

from app.core import key_store, owner_limits
from app.core.rules.errors import InvalidInput, Problem
from app.core.rules.owners import ADMIN
from app.ui.login import session_key, start_session
from app.ui.render import HTML, done
from app.web.auth import admin_only
from app.web.http import HttpRequest, RowId
from app.web.state import AppState, app_state

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


class KeyPages(Controller):
    path = "/keys"
    # Shared by every team: an admin key's alone.
    guards = [admin_only]
    opt = {"admin_action": "manage API keys"}

    @get("/")
    async def show(self, state: State) -> Any:
        return await _page(app_state(state))

    @post("/")
    async def create(self, request: HttpRequest, state: State, data: Form) -> Any:
        app = app_state(state)
        row, key = await key_store.create(app.db, app.api_keys, data.get("name", ""), data.get("team", ""))
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

    @post("/teams/{team:str}/limits")
    async def set_limits(self, request: HttpRequest, state: State, team: FromPath[str], data: Form) -> Any:
        app = app_state(state)
        tokens = _optional_number(data.get("max_enqueued_tokens", ""), "max_enqueued_tokens", int)
        budget = _optional_number(data.get("budget_usd", ""), "budget_usd", float)
        await owner_limits.set_limits(app.db, team, tokens, budget)
        return done(request, f"Limits of team {team!r} saved.", "/keys", redirect=True)


def _optional_number(text: str, name: str, kind: type[int] | type[float]) -> Any:
    """A form field's number, None when left empty (no limit)."""
    text = text.strip().replace(",", "").replace("_", "")
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        detail = f"{name} is a number, or empty for no limit."
        raise InvalidInput(Problem("invalid_limit", "Invalid limit", detail, f"/{name}")) from None


async def _page(app: AppState, created: Any = None, headers: dict[str, str] | None = None) -> Template:
    context = {
        "rows": await key_store.listing(app.db),
        "fixed": len(app.api_keys.fixed),
        "created": created,
        "teams": await owner_limits.usage(app.db, await app.effective.fresh(), ADMIN),
    }
    return Template(template_name="keys.html", context=context, headers=headers, media_type=HTML)
