"""The dashboard: what is in flight, how delivery goes, and whether the backend, the broker and
the delivery destinations answer."""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.datastructures import State
from litestar.response import Redirect

from app.core.read import destinations, failing, stats
from app.ui.render import page
from app.web.auth import caller_of
from app.web.http import HttpRequest
from app.web.protection import is_loopback
from app.web.state import app_state


@get("/")
async def dashboard(request: HttpRequest, state: State) -> Any:
    if not caller_of(request).admin:
        # Its figures and failing destinations are every team's: a team starts at its requests.
        return Redirect("/requests", status_code=303)
    app = app_state(state)
    numbers = await stats.dashboard(app.db)
    failing_now = await failing.failing_destinations(app.db)
    held = await destinations.held(app.db)
    process = await app.status.current()
    return page(
        request,
        "dashboard.html",
        "_dashboard_live.html",
        s=numbers,
        backends=process.backends,
        rabbitmq=process.rabbitmq,
        scheduler=process.scheduler,
        failing=failing_now,
        held=held,
        chart_max=max(numbers.per_minute) or 1,
        exact_up_to=stats.EXACT_UP_TO,
        open_to_network=not app.api_keys.required and not is_loopback(app.host),
    )
