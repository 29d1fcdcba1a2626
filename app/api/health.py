"""Liveness and readiness in one answer."""

from __future__ import annotations

from importlib.metadata import version

from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import text

from app.api.schemas import BackendOut, HealthOut
from app.broker import rabbitmq_status
from app.core.runtime.scheduler import scheduler_state


@get(
    "/health",
    tags=["health"],
    summary="Database, scheduler and RabbitMQ status",
    description="503 when this process cannot serve (database or scheduler down). A RabbitMQ "
    "outage shows under `rabbitmq` and an unreachable backend or a refused OpenAI key under "
    "`backends`; those keep 200 (intake still works and work waits), a refused key makes the "
    "status `degraded`.",
    operation_id="health",
)
async def health(state: State) -> Response[HealthOut]:
    try:
        async with state.db.transaction() as session:
            await session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:
        database = f"error: {type(exc).__name__}"
    worker = state.worker
    scheduler = scheduler_state(worker)
    healthy = database == "ok" and scheduler != "stopped"
    rabbitmq = rabbitmq_status(state.broker, state.consumer)
    backends = [
        BackendOut(b.name, b.target, b.reachable, b.detail)
        for b in (await worker.backend_statuses() if worker else [])
    ]
    blocked = worker is not None and worker.openai_block is not None
    status = "ok" if healthy and not blocked else "degraded"
    body = HealthOut(status, database, scheduler, version("batchgate"), rabbitmq, backends)
    return Response(body, status_code=200 if healthy else 503)
