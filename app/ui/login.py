"""Logging in to the UI: with any API key configured, every page asks for one first. The session
cookie (signed, HttpOnly, SameSite) carries only a random token; its row in the database
(app.core.ui_sessions) says which key logged in, and logout or revoking that key ends it. Wrong
keys are throttled per client address (app.core.rules.login_throttle)."""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import quote

from litestar import get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.params import Body, QueryParameter
from litestar.response import Redirect, Template

from app.core.rules.access import digest
from app.core.rules.owners import ADMIN, Caller
from app.ui.render import HTML, is_htmx
from app.web.auth import set_caller
from app.web.http import Connection, HttpRequest
from app.web.state import app_state

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
PUBLIC = {"public": True}  # the opt of the pages a visitor sees before logging in
SESSION_TOKEN = "sid"  # the session cookie's one entry: the random token of its ui_sessions row


class LoginRequired(NotAuthorizedException):
    """401: keys are configured and this browser has not logged in (or its key was revoked)."""


async def session_key(connection: Connection) -> str | None:
    """The digest of the key this browser's live session logged in with, or None."""
    app = app_state(connection.app.state)
    token = connection.session.get(SESSION_TOKEN) if connection.scope.get("session") else None
    if not isinstance(token, str):
        return None
    return await app.ui_sessions.key_of(app.db, token)


async def session_caller(connection: Connection) -> Caller | None:
    """Who this browser acts as: an admin when no key is needed, else the team (or admin) of the
    key its live session logged in with; None when it must log in."""
    keys = app_state(connection.app.state).api_keys
    if not keys.required:
        return ADMIN
    held = await session_key(connection)
    return keys.caller_of(held) if held is not None and keys.known(held) else None


async def logged_in(connection: Connection) -> bool:
    """Whether no key is needed, or the session is live and its key is accepted now."""
    return await session_caller(connection) is not None


async def start_session(request: HttpRequest, key_digest: str) -> None:
    """Log this browser in with the key of `key_digest` (a new token, a new row)."""
    app = app_state(request.app.state)
    request.set_session({SESSION_TOKEN: await app.ui_sessions.start(app.db, key_digest)})


# async though it awaits nothing: Litestar runs a sync guard in a worker thread, per request.
async def require_login(connection: Connection, handler: BaseRouteHandler) -> None:
    """The UI router's guard: every page but the login form needs a logged-in session."""
    if handler.opt.get("public"):
        return
    caller = await session_caller(connection)
    if caller is None:
        raise LoginRequired()
    set_caller(connection, caller)


def to_login(request: HttpRequest, _: LoginRequired) -> Any:
    """Send the browser to the login form, and back to where it was going afterwards."""
    target = "/login?next=" + quote(request.scope["path"], safe="/")
    if is_htmx(request):  # a live fragment or an action: reload the whole page on the form
        return Template(
            template_name="_toast.html",
            context={"kind": "bad", "messages": ["Log in again."]},
            headers={"HX-Redirect": target},
            status_code=401,
            media_type=HTML,
        )
    return Redirect(target, status_code=303)


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this site only (no `//host` or `https://`)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@get("/login", opt=PUBLIC)
async def login_form(
    request: HttpRequest, next: Annotated[str | None, QueryParameter(max_length=2000)] = None
) -> Any:
    if await logged_in(request):
        return Redirect(safe_next(next), status_code=303)
    return Template(template_name="login.html", context={"next": safe_next(next)}, media_type=HTML)


@post("/login", opt=PUBLIC)
async def login(request: HttpRequest, state: State, data: Form) -> Any:
    app = app_state(state)
    key = data.get("key", "").strip()
    if not app.api_keys.required:
        return Redirect("/", status_code=303)
    client = request.client.host if request.client else "unknown"
    if (wait := app.login_throttle.wait(client)) > 0:
        return throttled(data, wait)
    if not app.api_keys.accepts(key):
        app.login_throttle.failed(client)
        context = {"next": safe_next(data.get("next")), "error": "That key is not valid."}
        return Template(template_name="login.html", context=context, status_code=401, media_type=HTML)
    await start_session(request, digest(key))
    return Redirect(safe_next(data.get("next")), status_code=303)


def throttled(data: dict[str, str], wait: float) -> Template:
    """429: too many wrong keys lately; no key is even compared until `wait` seconds pass."""
    seconds = math.ceil(wait)
    error = f"Too many wrong keys were tried. Try again in {seconds} s."
    return Template(
        template_name="login.html",
        context={"next": safe_next(data.get("next")), "error": error},
        status_code=429,
        headers={"Retry-After": str(seconds)},
        media_type=HTML,
    )


@post("/logout", opt=PUBLIC)
async def logout(request: HttpRequest) -> Any:
    app = app_state(request.app.state)
    token = request.session.get(SESSION_TOKEN) if request.scope.get("session") else None
    if isinstance(token, str):
        await app.ui_sessions.end(app.db, token)
    request.clear_session()
    return Redirect("/login", status_code=303)
