"""The app served for real on loopback, with settings short enough for tests to finish in seconds."""

from __future__ import annotations

import re
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from litestar import Litestar

from app.asgi import create_app
from app.db.session import Database
from app.ground.config import Settings
from app.web.state import app_state
from testkit.builders import NO_DELIVERY, request_payload, webhook
from testkit.standins.serve import serve, serve_on

UNREACHABLE_INFERENCE = "http://127.0.0.1:9/v1"  # discard port: nothing answers
# The keys of the `keyed` app (tests/conftest.py): two, so a test can tell one key from another.
API_KEYS = ("key-one-7f3a", "key-two-c91d")


# The default schedule's shape, in tenths of seconds instead of hours.
FAST_RETRIES = "0.05s,0.1s,0.2s,0.4s,0.5s,0.5s,0.5s"


def fast_settings(
    database_url: str, inference_url: str | None = UNREACHABLE_INFERENCE, **overrides: Any
) -> Settings:
    """Settings with short ticks, ages and backoffs so pipeline tests finish in seconds. An
    unreachable inference server by default, so that no test starts the embedded model unless it
    passes None (testkit/realmodel.py)."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "local_base_url": inference_url,
        "local_batch_max_age_seconds": 0.3,
        "local_retry_backoff_seconds": 0.01,
        # A line's own failure fails it; the tests of a whole server down set a bound.
        "local_outage_max_seconds": 0,
        "tick_seconds": 0.2,
        "lease_seconds": 5,
        "delivery_retry_schedule": FAST_RETRIES,
        "webhook_timeout_seconds": 5,
        "webhook_secret": None,
        "local_api_key": None,
        "api_keys": None,  # an API_KEYS in the developer's environment must not close the API
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class RunningApp:
    url: str
    client: httpx.AsyncClient
    settings: Settings
    db: Database
    worker: Any = None
    broker: Any = None
    consumer: Any = None

    async def submit(self, custom_id: str, webhook_url: str | None, **body: Any) -> httpx.Response:
        delivery = webhook(webhook_url) if webhook_url else NO_DELIVERY
        return await self.client.post("/api/requests", json=request_payload(custom_id, delivery, **body))


StartApp = Callable[[Settings], AbstractAsyncContextManager[RunningApp]]


@asynccontextmanager
async def run_app(settings: Settings, sock: socket.socket | None = None) -> AsyncIterator[RunningApp]:
    """Serve create_app(settings) on a free loopback port (or on `sock`), with a client pointed
    at it. Files (DATA_DIR) go to a temporary directory removed afterwards, unless the test
    chose one."""
    with tempfile.TemporaryDirectory(prefix="bg_test_files_") as files_dir:
        if settings.data_dir == Settings.model_fields["data_dir"].default:
            settings = settings.model_copy(update={"data_dir": files_dir})
        app = create_app(settings)
        served = serve(app) if sock is None else serve_on(app, sock)
        async with served as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            await with_csrf_token(client)
            yield RunningApp(
                url,
                client,
                settings,
                app_state(app.state).db,
                app.state.pipeline.worker,
                app.state.pipeline.broker,
                app.state.pipeline.consumer,
            )


@asynccontextmanager
async def run_app_at_its_port(settings: Settings) -> AsyncIterator[RunningApp]:
    """run_app on a free port of 127.0.0.1 that its settings name as PORT, as `batchgate serve`
    listens where its settings say (HOST stays as they give it: 127.0.0.1, 0.0.0.0, ...)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        async with run_app(settings.model_copy(update={"port": sock.getsockname()[1]}), sock) as app:
            yield app


PATH_PARAMETER = re.compile(r"\{(\w+):(\w+)\}")


def every_route(app: Litestar) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, path parameters filled with dummy values."""
    routes = []
    for route in app.routes:
        path = PATH_PARAMETER.sub(lambda m: "1" if m[2] == "int" else "dummy", route.path)
        routes.extend((method, path) for method in sorted(route.methods))
    return routes


CSRF_COOKIE = "batchgate_csrf"


async def with_csrf_token(client: httpx.AsyncClient) -> None:
    """Give the client the UI's CSRF cookie and send its token with every request, as the UI's
    pages make htmx do; the API ignores both."""
    await client.get("/login")
    if token := client.cookies.get(CSRF_COOKIE):
        client.headers["x-csrftoken"] = token
