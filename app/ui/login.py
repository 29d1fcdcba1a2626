"""Logging in to the UI: with any API key configured, every page asks for one first. The session
cookie (signed, HttpOnly, SameSite) keeps the key's digest, so revoking the key ends the session."""

from __future__ import annotations

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
from app.ui.render import HTML, is_htmx
from app.web.http import Connection, HttpRequest
from app.web.state import app_state

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
PUBLIC = {"public": True}  # the opt of the pages a visitor sees before logging in


class LoginRequired(NotAuthorizedException):
    """401: keys are configured and this browser has not logged in (or its key was revoked)."""


def logged_in(connection: Connection) -> bool:
    """Whether no key is needed, or the session holds the digest of a key accepted now."""
    keys = app_state(connection.app.state).api_keys
    if not keys.required:
        return True
    held = connection.session.get("key") if connection.scope.get("session") else None
    return isinstance(held, str) and keys.known(held)


# async though it awaits nothing: Litestar runs a sync guard in a worker thread, per request.
async def require_login(connection: Connection, handler: BaseRouteHandler) -> None:
    """The UI router's guard: every page but the login form needs a logged-in session."""
    if not handler.opt.get("public") and not logged_in(connection):
        raise LoginRequired()


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
    if logged_in(request):
        return Redirect(safe_next(next), status_code=303)
    return Template(template_name="login.html", context={"next": safe_next(next)}, media_type=HTML)


@post("/login", opt=PUBLIC)
async def login(request: HttpRequest, state: State, data: Form) -> Any:
    keys = app_state(state).api_keys
    key = data.get("key", "").strip()
    if not keys.required:
        return Redirect("/", status_code=303)
    if not keys.accepts(key):
        context = {"next": safe_next(data.get("next")), "error": "That key is not valid."}
        return Template(template_name="login.html", context=context, status_code=401, media_type=HTML)
    request.set_session({"key": digest(key)})
    return Redirect(safe_next(data.get("next")), status_code=303)


@post("/logout", opt=PUBLIC)
async def logout(request: HttpRequest) -> Any:
    request.clear_session()
    return Redirect("/login", status_code=303)
