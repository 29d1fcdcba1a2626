"""The operator's web UI: server-rendered Jinja2 pages with htmx fragments."""

from __future__ import annotations

from collections.abc import Sequence

from litestar import Router
from litestar.di import Provide
from litestar.types import Middleware

from app.ui.batches import BatchPages
from app.ui.dashboard import dashboard
from app.ui.destinations import DestinationPages
from app.ui.keys import KeyPages
from app.ui.login import LoginRequired, login, login_form, logout, require_login, to_login
from app.ui.recoveries import RecoveryPages
from app.ui.render import UI_EXCEPTION_HANDLERS, listing
from app.ui.requests import RequestPages
from app.ui.settings import SettingsPages
from app.ui.subscriptions import SubscriptionPages


def ui_router(middleware: Sequence[Middleware]) -> Router:
    """The UI's routes, behind `middleware` (its session and CSRF cookies: only the UI's routes
    run them, see app.web.protection.UiCookies). Built per app, as its cookies' secret is."""
    return Router(
        path="/",
        route_handlers=[
            dashboard,
            BatchPages,
            RequestPages,
            DestinationPages,
            RecoveryPages,
            SettingsPages,
            KeyPages,
            SubscriptionPages,
            login_form,
            login,
            logout,
        ],
        guards=[require_login],
        exception_handlers={LoginRequired: to_login, **UI_EXCEPTION_HANDLERS},
        include_in_schema=False,
        # The query parameters every list page shares: search, status and where the page starts.
        dependencies={"listing": Provide(listing, sync_to_thread=False)},
        middleware=middleware,
    )
