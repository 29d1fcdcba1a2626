"""The dashboard: what is in flight, how delivery goes, and whether the backend and broker answer."""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.datastructures import State

from app.core.read import stats
from app.ui.render import HttpRequest, page


@get("/")
async def dashboard(request: HttpRequest, state: State) -> Any:
    numbers = await stats.dashboard(state.db)
    worker, broker, consumer = state.worker, state.broker, state.consumer
    backends = await worker.backend_statuses() if worker else []
    rabbitmq = (
        broker.status(
            consuming=bool(consumer and consumer.consuming), intake_error=consumer.error if consumer else None
        )
        if broker
        else None
    )
    return page(
        request,
        "dashboard.html",
        "_dashboard_live.html",
        s=numbers,
        backends=backends,
        rabbitmq=rabbitmq,
        scheduler="running"
        if worker and worker.scheduler.running
        else ("disabled" if worker is None else "stopped"),
        chart_max=max(numbers.per_minute) or 1,
    )
