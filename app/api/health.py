"""Liveness and readiness in one answer."""

from __future__ import annotations

from importlib.metadata import version

from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import text

from app.api.schemas import HealthOut
from app.broker import rabbitmq_status
from app.core.worker import scheduler_state


@get(
    "/health",
    tags=["health"],
    summary="Database, scheduler and RabbitMQ status",
    description="503 when this process cannot serve (database or scheduler down). A RabbitMQ "
    "outage shows under `rabbitmq` but keeps 200: REST intake still works and deliveries wait.",
    operation_id="health",
)
async def health(state: State) -> Response[HealthOut]:
    try:
        async with state.db.transaction() as session:
            await session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:
        database = f"error: {type(exc).__name__}"
    scheduler = scheduler_state(state.worker)
    healthy = database == "ok" and scheduler != "stopped"
    rabbitmq = rabbitmq_status(state.broker, state.consumer)
    body = HealthOut("ok" if healthy else "degraded", database, scheduler, version("batchgate"), rabbitmq)
    return Response(body, status_code=200 if healthy else 503)
