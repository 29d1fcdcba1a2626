"""PostgreSQL with autovacuum off slows batching and delivery as dead row versions pile up in
the status indexes (a 1,000,000-request run read a million dead index entries a tick): the app
says so when it starts, and says nothing when autovacuum is on or the database is SQLite."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from app.asgi import AUTOVACUUM_OFF
from testkit import PG_ADMIN_DSN, StartApp, fast_settings


def warned(caplog: pytest.LogCaptureFixture) -> bool:
    return any(r.getMessage() == AUTOVACUUM_OFF for r in caplog.records)


async def test_the_start_warns_when_postgres_runs_without_autovacuum(
    database_url: str, start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    if database_url.startswith("sqlite"):
        off = False
    else:
        connection = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            off = await connection.fetchval("SHOW autovacuum") == "off"
        finally:
            await connection.close()
    with caplog.at_level(logging.WARNING, logger="app.asgi"):
        async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
            assert (await app.client.get("/health")).status_code == 200  # a warning, not a refusal
    assert warned(caplog) == off
