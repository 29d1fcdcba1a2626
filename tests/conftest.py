"""Fixtures: a fresh database per test (SQLite file or a uniquely named PostgreSQL database),
stand-in inference server and webhook receiver on loopback, and the app served for real."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.asgi import create_app
from app.config import Settings
from app.db.migrate import upgrade
from app.db.session import Database
from tests.amqp import Amqp, amqp_client, rabbitmq_reachable
from tests.standins.inference import InferenceStandin
from tests.standins.receiver import WebhookReceiver
from tests.standins.serve import serve

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_ADMIN_DSN = f"postgresql://postgres@{PG_HOST}:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


async def _postgres_reachable() -> bool:
    try:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


def require_service(name: str, reachable: bool) -> None:
    """Skip when a service is absent on a laptop; fail in CI, where it is required."""
    if reachable:
        return
    message = f"{name} is not reachable"
    if IN_CI:
        pytest.fail(f"{message}, and CI=true makes it required")
    pytest.skip(message)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A new, uniquely named PostgreSQL database, dropped afterwards."""
    require_service("PostgreSQL on 127.0.0.1:5432", await _postgres_reachable())
    name = f"bg_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://postgres@{PG_HOST}:5432/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database: each test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'batchgate.db'}"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    async with postgres_database() as url:
        await asyncio.to_thread(upgrade, url)
        yield url


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database, for tests about the API surface rather than the database."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'batchgate.db'}"
    await asyncio.to_thread(upgrade, url)
    return url


@pytest.fixture
async def amqp() -> AsyncIterator[Amqp]:
    """A plain AMQP client on the real RabbitMQ; the queues it names are deleted afterwards."""
    require_service("RabbitMQ on 127.0.0.1:5672", await rabbitmq_reachable())
    async with amqp_client() as client:
        yield client


@pytest.fixture
async def inference() -> AsyncIterator[InferenceStandin]:
    standin = InferenceStandin()
    async with serve(standin) as url:
        standin.url = url  # type: ignore[attr-defined]
        yield standin


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    standin = WebhookReceiver()
    async with serve(standin) as url:
        standin.url = url  # type: ignore[attr-defined]
        yield standin


def fast_settings(
    database_url: str, inference_url: str = "http://127.0.0.1:9/v1", **overrides: Any
) -> Settings:
    """Settings with short ticks, ages and backoffs so pipeline tests finish in seconds."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "local_base_url": inference_url,
        "local_batch_max_age_seconds": 0.3,
        "local_retry_backoff_seconds": 0.01,
        "tick_seconds": 0.2,
        "lease_seconds": 5,
        "delivery_backoff_base_seconds": 0.05,
        "delivery_backoff_max_seconds": 0.5,
        "webhook_timeout_seconds": 5,
        "webhook_secret": None,
        "local_api_key": None,
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
        delivery = {"type": "webhook", "webhook_url": webhook_url} if webhook_url else {"type": "none"}
        return await self.client.post("/api/requests", json=request_payload(custom_id, delivery, **body))


def request_payload(custom_id: str, delivery: dict[str, Any], **body: Any) -> dict[str, Any]:
    """A valid intake body for the stand-in model."""
    return {
        "custom_id": custom_id,
        "url": "/v1/chat/completions",
        "method": "POST",
        "body": {"model": "stand-in", "messages": [{"role": "user", "content": custom_id}], **body},
        "delivery_config": delivery,
    }


StartApp = Callable[[Settings], AbstractAsyncContextManager[RunningApp]]


@pytest.fixture
def start_app() -> StartApp:
    """Serve create_app(settings) on a free loopback port, with a client pointed at it."""

    @asynccontextmanager
    async def start(settings: Settings) -> AsyncIterator[RunningApp]:
        app = create_app(settings)
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield RunningApp(
                url, client, settings, app.state.db, app.state.worker, app.state.broker, app.state.consumer
            )

    return start


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    timeout: float = 30.0,  # noqa: ASYNC109
    interval: float = 0.05,
    what: str = "",
) -> None:
    """Poll an async condition until it holds; fail with `what` after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(interval)
