"""Liveness and readiness in one answer."""

from __future__ import annotations

from importlib.metadata import version

from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from app.api.schemas import BackendOut, HealthOut, HeldDestinationOut
from app.core.driver import status
from app.core.read import destinations, failing
from app.core.read.failing import FailingDestination
from app.web.state import AppState, app_state


@get(
    "/health",
    tags=["health"],
    summary="Database, scheduler and RabbitMQ status",
    description="503 when this process cannot serve (database or scheduler down). A RabbitMQ "
    "outage shows under `rabbitmq` and an unreachable backend or a refused OpenAI key under "
    "`backends`; those keep 200 (intake still works and work waits), a refused key makes the "
    "status `degraded`. Destinations whose deliveries are retrying (a receiver down) show under "
    "`failing_destinations`, by host and port only, and those whose circuit breaker holds their "
    "deliveries (or an operator paused) under `held_destinations`; they keep 200 too. "
    "`embedded` shows the model server Batchgate runs itself when no LOCAL_BASE_URL is set "
    "(starting, ready or failed, with why).",
    operation_id="health",
    responses={
        503: ResponseSpec(HealthOut, description="This process cannot serve: database or scheduler down")
    },
)
async def health(state: State) -> Response[HealthOut]:
    app = app_state(state)
    database = await status.database(app.db)
    process = await app.status.current()
    healthy = database == "ok" and process.scheduler != "stopped"
    backends = [BackendOut(b.name, b.target, b.reachable, b.detail) for b in process.backends]
    overall = "ok" if healthy and not process.batch_api_blocks else "degraded"
    # A receiver down is not this process down: listed, never a reason for 503.
    failing_now = await _failing_destinations(app) if database == "ok" else []
    held = await _held_destinations(app) if database == "ok" else []
    body = HealthOut(
        overall,
        database,
        process.scheduler,
        version("batchgate"),
        process.rabbitmq,
        backends,
        failing_now,
        app.role,
        held,
        process.embedded,
    )
    return Response(body, status_code=200 if healthy else 503)


async def _failing_destinations(app: AppState) -> list[FailingDestination]:
    try:
        return await failing.failing_destinations(app.db)
    except Exception:  # the database went away since it answered: `database` says enough
        return []


async def _held_destinations(app: AppState) -> list[HeldDestinationOut]:
    try:
        views = await destinations.held(app.db)
    except Exception:  # as above
        return []
    return [HeldDestinationOut(v.destination, v.breaker, v.opened_at, v.probe_at, v.waiting) for v in views]
