"""Fixtures only: a fresh database per test (SQLite file or a uniquely named PostgreSQL database),
stand-in inference server and webhook receiver on loopback, a RabbitMQ client, and the app served
for real. The helpers behind them live in testkit/."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from app.db.session import Database
from testkit import (
    API_KEYS,
    Amqp,
    RunningApp,
    StartApp,
    amqp_client,
    fast_settings,
    rabbitmq_reachable,
    require_service,
    run_app,
)
from testkit.databases import Migrated
from testkit.standins.anthropic_batch import AnthropicBatchStandin
from testkit.standins.asgi import Relay
from testkit.standins.inference import InferenceStandin
from testkit.standins.openai_batch import OpenAIBatchStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.serve import serve


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrated]:
    """The templates of this test process's migrated databases."""
    templates = Migrated(tmp_path_factory.mktemp("templates"))
    yield templates
    asyncio.run(templates.drop())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated: Migrated
) -> AsyncIterator[str]:
    """A migrated, empty database: each test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield await migrated.sqlite(tmp_path)
        return
    async with migrated.postgres() as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A handle on `database_url`, for tests that read and write rows without the app."""
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture(name="sqlite_url")
async def sqlite_url_fixture(tmp_path: Path, migrated: Migrated) -> str:
    """A migrated SQLite database, for tests about the API surface rather than the database."""
    return await migrated.sqlite(tmp_path)


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


@pytest.fixture
async def anthropic_api() -> AsyncIterator[AnthropicBatchStandin]:
    """The stand-in Message Batches API, served on a loopback port."""
    standin = AnthropicBatchStandin()
    async with serve(standin) as url:
        standin.url = url  # type: ignore[attr-defined]
        yield standin


@pytest.fixture
def start_app() -> StartApp:
    """Serve create_app(settings) on a free loopback port, with a client pointed at it."""
    return run_app


@pytest.fixture
async def keyed(sqlite_url: str, start_app: StartApp) -> AsyncIterator[RunningApp]:
    """The app with API_KEYS set to two keys (spaces around them, as an operator may write the list);
    the scheduler is off."""
    settings = fast_settings(sqlite_url, scheduler_enabled=False, api_keys=f" {API_KEYS[0]} ,{API_KEYS[1]}")
    async with start_app(settings) as app:
        yield app


@pytest.fixture
async def openai_served() -> AsyncIterator[tuple[OpenAIBatchStandin, Relay]]:
    """The stand-in OpenAI, served behind a relay whose hooks let a test act at an exact request."""
    standin = OpenAIBatchStandin()
    standin.polls_per_status = 0
    relay = Relay(standin)
    async with serve(relay) as url:
        standin.url = url  # type: ignore[attr-defined]
        yield standin, relay


@pytest.fixture
def openai_api(openai_served: tuple[OpenAIBatchStandin, Relay]) -> OpenAIBatchStandin:
    return openai_served[0]


@pytest.fixture
def openai_relay(openai_served: tuple[OpenAIBatchStandin, Relay]) -> Relay:
    return openai_served[1]


@pytest.fixture
def driver_trips(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """From now on, each call aiosqlite runs in its connection's thread (a trip there and back
    through the event loop), as it is queued."""
    trips: list[object] = []
    execute = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(fn)
        return await execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return trips
