"""How UI controllers answer: a whole page, only its live fragment (htmx), or a toast after an action.

htmx sends `HX-Request: true`; a page then answers with just the fragment that changes, so
polling swaps a table body or a progress bar, never the page. An action answers with a toast
retargeted into `#toast` and an `HX-Trigger: refresh` that makes the live fragments reload at once.
Without JavaScript the same forms still work: actions redirect back (303).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment
from litestar import MediaType, Response
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromQuery
from litestar.response import Redirect, Template
from litestar.types import ExceptionHandlersMap

from app.core.read.pages import PAGE_SIZES, Page
from app.core.read.queries import ListQuery
from app.core.rules.errors import BatchgateError
from app.core.rules.states import B, D, R
from app.ground.clock import utcnow
from app.ground.statuses import Outcome
from app.ground.webhook_headers import redact
from app.web.auth import team_of
from app.web.http import STATUS_FOR_KIND, HttpRequest
from app.web.state import app_state

# Handlers return Any, for which Litestar would default to JSON: every UI answer says it is HTML.
HTML = MediaType.HTML

# The colour of each status badge: statuses of batches (B), requests (R), deliveries (D) and
# attempts (Outcome), then the broker's connection states on the dashboard.
BADGE: dict[str, str] = {
    **dict.fromkeys((B.BUILDING, B.READY, B.SUBMITTING, R.BATCHED), "info"),
    **dict.fromkeys(
        (B.PROCESSING, B.COLLECTING, B.CANCELLING, D.RETRYING, Outcome.RETRYABLE_FAILURE), "warn"
    ),
    **dict.fromkeys((B.DONE, R.SUCCEEDED, D.DELIVERED, Outcome.SUCCESS), "ok"),
    **dict.fromkeys((B.FAILED, B.EXPIRED, D.DELIVERY_FAILED, Outcome.PERMANENT_FAILURE), "bad"),
    **dict.fromkeys((R.PENDING, B.CANCELLED, D.SUPERSEDED), "muted"),
    "connected": "ok",
    "connecting": "warn",
    "disconnected": "bad",
    "unreachable": "bad",
    "failing": "bad",  # a delivery destination with deliveries retrying
    "closed": "muted",
    "open": "bad",  # a destination's circuit breaker: its deliveries are held
    "probing": "warn",
    # A recovery's statuses (app.ground.statuses.RecoveryStatus); cancelled is a batch's too.
    "queued": "info",
    "running": "warn",
}


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


def page(request: HttpRequest, name: str, fragment: str, **context: Any) -> Template:
    """The full page `name`, or only `fragment` when htmx asks (polling, filters)."""
    return Template(template_name=fragment if is_htmx(request) else name, context=context, media_type=HTML)


def listing(
    search: FromQuery[str] = "",
    status: FromQuery[str] = "",
    size: FromQuery[int] = 25,
    after: FromQuery[str] = "",
    before: FromQuery[str] = "",
) -> dict[str, Any]:
    """The query parameters every list page shares (a Litestar dependency)."""
    return {"search": search.strip(), "status": status, "size": size, "after": after, "before": before}


# The list pages and the results table each one swaps in.
LIST_TEMPLATES = {
    "batch": ("batches.html", "_batch_results.html"),
    "request": ("requests.html", "_request_results.html"),
}


def list_page(request: HttpRequest, of: str, query: ListQuery, result: Page[Any], **choices: Any) -> Template:
    """The list page of `of` (batch or request), or only its results table when htmx asks."""
    name, fragment = LIST_TEMPLATES[of]
    return page(request, name, fragment, query=query, page=result, sizes=PAGE_SIZES, **choices)


def done(request: HttpRequest, message: str, back: str, redirect: bool = False) -> Response[Any]:
    """Answer a successful action: a toast and a refresh of the live fragments, or a redirect."""
    if not is_htmx(request):
        return Redirect(back, status_code=303)
    headers = (
        {"HX-Redirect": back}
        if redirect
        else {"HX-Trigger": "refresh", "HX-Retarget": "#toast", "HX-Reswap": "innerHTML"}
    )
    return Template(
        template_name="_toast.html",
        context={"kind": "ok", "messages": [message]},
        headers=headers,
        media_type=HTML,
    )


def ui_error(request: HttpRequest, exc: Exception) -> Response[Any]:
    """A refused action or a missing page, shown to a person: a toast (htmx) or an error page."""
    if isinstance(exc, BatchgateError):
        status = STATUS_FOR_KIND.get(exc.kind, 400)
        messages = [f"{p.title}: {p.detail}" for p in exc.problems]
    elif isinstance(exc, HTTPException):
        status, messages = exc.status_code, [str(exc.detail)]
    else:
        raise exc
    if is_htmx(request):
        return Template(
            template_name="_toast.html",
            context={"kind": "bad", "messages": messages},
            status_code=status,
            headers={"HX-Retarget": "#toast", "HX-Reswap": "innerHTML"},
            media_type=HTML,
        )
    return Template(
        template_name="error.html",
        context={"status": status, "messages": messages},
        status_code=status,
        media_type=HTML,
    )


UI_EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    BatchgateError: ui_error,
    NotFoundException: ui_error,
    HTTPException: ui_error,
}


def qs(query: Any, **changes: Any) -> str:
    """The query string of a list page's current query, with some fields changed (cursors)."""
    values = {**dataclasses.asdict(query), **changes}
    return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def register_filters(env: Environment) -> None:
    """The template helpers: badges, relative times, sizes, pretty JSON, query strings, and the
    app's state (the logout button shows when keys are required)."""
    env.globals.update(qs=qs, app_state=app_state, team_of=team_of)
    env.filters.update(
        badge=lambda status: BADGE.get(status or "", "muted"),
        ago=ago,
        due_in=due_in,
        since=since,
        bytes=human_bytes,
        num=lambda n: f"{n or 0:,}",
        pretty=lambda value: json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False),
        # A delivery config as it may be shown: webhook header values are secrets.
        redact=redact,
        delivery_kind=delivery_kind,
        pct=lambda part, whole: 0 if not whole else min(100.0, 100.0 * (part or 0) / whole),
    )


def delivery_kind(config: Any) -> str:
    """What a delivery config sends to, in a word: its type, or how many destinations it lists."""
    if isinstance(config, list):
        return f"{len(config)} destinations"
    return str(config.get("type", "—")) if isinstance(config, dict) else "—"


def since(at: datetime | None) -> str:
    """How long ago, compactly: 4s, 12m, 3h 5m, 2d 1h."""
    if at is None:
        return "—"
    seconds = max(0, int((utcnow() - _aware(at)).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours = seconds // 60, seconds // 3600
    if hours == 0:
        return f"{minutes}m"
    if hours < 24:
        return f"{hours}h {minutes % 60}m"
    return f"{hours // 24}d {hours % 24}h"


def ago(at: datetime | None) -> str:
    return "—" if at is None else f"{since(at)} ago"


def due_in(at: datetime | None) -> str:
    """How long until `at` (a probe's time): "in 4s", or "now" once it has come."""
    if at is None:
        return "—"
    seconds = int((_aware(at) - utcnow()).total_seconds())
    return "now" if seconds <= 0 else f"in {since(utcnow() - (_aware(at) - utcnow()))}"


def human_bytes(n: int | None) -> str:
    size = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
