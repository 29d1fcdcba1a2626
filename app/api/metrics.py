"""GET /metrics: Prometheus text format (see app/ground/metrics.py for what is measured)."""

from __future__ import annotations

import logging

from litestar import Response, get
from litestar.datastructures import State
from litestar.handlers import HTTPRouteHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.core.read import destinations, stats
from app.ground import metrics
from app.web.auth import RequireApiKey
from app.web.state import app_state

log = logging.getLogger(__name__)


async def metrics_text(state: State) -> Response[bytes]:
    try:
        stored = await stats.exact_counts(app_state(state).db)  # counted, never the dashboard's estimates
    except Exception as exc:  # a scrape still reports this process, and that the database is down
        log.warning("metrics: the database did not answer: %s", type(exc).__name__)
        metrics.STORED.database_down()
    else:
        metrics.STORED.set(stored)
        await _held_destinations(state)
    # Each backend's last probe, as /health shows it (probes are cached, so a scrape stays cheap).
    for backend in (await app_state(state).status.current()).backends:
        metrics.BACKEND_UP.labels(backend.name).set(1 if backend.reachable else 0)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _held_destinations(state: State) -> None:
    held = await destinations.held(app_state(state).db)
    metrics.DESTINATION_HELD.clear()  # one that closed since the last scrape is gone from the list
    for view in held:
        metrics.DESTINATION_HELD.labels(view.destination, view.breaker).set(1)


def metrics_route(public: bool) -> HTTPRouteHandler:
    """The /metrics handler: open, or behind the API key check (METRICS_PUBLIC=false)."""
    return get(
        "/metrics",
        middleware=None if public else [RequireApiKey],
        include_in_schema=False,
    )(metrics_text)
