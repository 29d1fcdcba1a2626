"""Liveness and readiness in one answer."""

from __future__ import annotations

from importlib.metadata import version

from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import text

from app.api.schemas import HealthOut


@get("/health", tags=["health"], summary="Database and scheduler status", operation_id="health")
async def health(state: State) -> Response[HealthOut]:
    try:
        async with state.db.transaction() as session:
            await session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:
        database = f"error: {type(exc).__name__}"
    worker = state.worker
    scheduler = (
        "running" if worker and worker.scheduler.running else ("disabled" if worker is None else "stopped")
    )
    healthy = database == "ok" and scheduler != "stopped"
    body = HealthOut("ok" if healthy else "degraded", database, scheduler, version("batchgate"))
    return Response(body, status_code=200 if healthy else 503)
