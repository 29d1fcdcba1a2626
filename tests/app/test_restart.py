"""Stopping the app mid-run, gracefully or with SIGKILL, and starting it again loses nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.db.models import Delivery, Request
from app.db.session import Database
from testkit import StartApp, fast_settings, request_payload, wait_until, webhook
from testkit.processes import app_env, app_process, kill
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

COUNT = 120


def payload(i: int, hook: str) -> dict[str, object]:
    return request_payload(f"r-{i:03d}", webhook(hook))


async def delivered_count(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).where(Delivery.status == "delivered")) or 0)


async def finished_count(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).where(Request.status == "succeeded")) or 0)


def assert_each_delivered(receiver: WebhookReceiver) -> None:
    ids = {r.custom_id for r in receiver.successes()}
    assert ids == {f"r-{i:03d}" for i in range(COUNT)}, f"missing: {COUNT - len(ids)}"


async def test_graceful_stop_mid_run_then_restart(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    inference.delay_seconds = 0.02  # slow enough that the stop lands mid-batch
    settings = fast_settings(database_url, inference.url + "/v1", local_concurrency=2, batch_max_requests=40)
    async with start_app(settings) as app:
        for i in range(COUNT):
            assert (await app.client.post("/api/requests", json=payload(i, receiver.url))).status_code == 202
        await wait_until(lambda: _at_least(finished_count(app.db), 10), timeout=30, what="some results")
    # Stopped: some requests ran, some did not, some deliveries may be due.
    db = Database(database_url)
    try:
        assert await finished_count(db) < COUNT, "the stop came too late to test anything"
    finally:
        await db.dispose()
    async with start_app(settings) as app:
        await wait_until(lambda: _at_least(delivered_count(app.db), COUNT), timeout=60, what="all delivered")
    assert_each_delivered(receiver)


async def _at_least(value: object, n: int) -> bool:
    return await value >= n  # type: ignore[operator]


@pytest.mark.slow
async def test_sigkill_mid_run_then_restart_loses_nothing(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    inference.delay_seconds = 0.02
    env = app_env(database_url, inference.url, tmp_path, LOCAL_CONCURRENCY="2", BATCH_MAX_REQUESTS="40")
    db = Database(database_url)
    try:
        async with app_process(env) as (process, url):
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                for i in range(COUNT):
                    assert (
                        await client.post("/api/requests", json=payload(i, receiver.url))
                    ).status_code == 202
            await wait_until(lambda: _at_least(finished_count(db), 10), timeout=30, what="some results")
            kill(process)
            await process.wait()
        assert await finished_count(db) < COUNT, "the kill came too late to test anything"

        async with app_process(env):
            await wait_until(lambda: _at_least(delivered_count(db), COUNT), timeout=90, what="all delivered")
        assert_each_delivered(receiver)
    finally:
        await db.dispose()
