"""What the faces (API, UI, middleware) read of the running app, as one typed object.

The lifespan builds it when the app starts and keeps it on the Litestar state; handlers,
middleware and guards get it back with `app_state`. Nothing answers before the lifespan has run,
so every field is set by then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from litestar.datastructures import State

from app.core.actions import Actions
from app.core.driver.status import StatusBoard
from app.core.rules.access import ApiKeys
from app.core.rules.effective import EffectiveSettings
from app.core.rules.login_throttle import LoginThrottle
from app.core.ui_sessions import UiSessions
from app.db.session import Database

# The key it is kept under on the Litestar state.
KEY = "app_state"


@dataclass(frozen=True, slots=True)
class AppState:
    db: Database
    effective: EffectiveSettings
    actions: Actions
    status: StatusBoard  # what /health and the dashboard show of this process
    api_keys: ApiKeys  # refreshed in place from the database (app.core.key_store)
    role: Literal["all", "api", "worker"]  # SERVE_ROLE
    host: str  # the address served on (HOST), to warn when it is open to the network
    allowed_hosts: tuple[str, ...]  # the Host headers answered (ALLOWED_HOSTS)
    ui_sessions: UiSessions  # the UI logins, kept in the database (app.core.ui_sessions)
    login_throttle: LoginThrottle  # wrong keys at the login form, per client (this process)

    def keep_on(self, state: State) -> None:
        state[KEY] = self


def app_state(state: State) -> AppState:
    """The app's typed state, from the Litestar state a handler is given (or `request.app.state`)."""
    held = state.get(KEY)
    if not isinstance(held, AppState):
        raise RuntimeError("the app's state is set when it starts (its lifespan), and it has not")
    return held
