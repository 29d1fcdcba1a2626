"""`batchgate serve --role api|worker|all` (issue 13): an api process serves the API and UI and
runs no pipeline; a worker process runs the pipeline and serves only /health and /metrics."""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.__main__ import main
from app.db.models import BatchEvent, DeliveryAttempt
from app.db.session import Database
from testkit import request_payload, webhook
from testkit.processes import app_env, app_process
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

pytestmark = pytest.mark.slow

COUNT = 20


async def test_an_api_process_and_a_worker_process_split_the_work(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    env = app_env(database_url, inference.url, tmp_path, BATCH_MAX_REQUESTS="5")
    async with AsyncExitStack() as stack:
        api, api_url = await stack.enter_async_context(app_process({**env, "SERVE_ROLE": "api"}))
        worker, worker_url = await stack.enter_async_context(app_process({**env, "SERVE_ROLE": "worker"}))
        api_client = await stack.enter_async_context(httpx.AsyncClient(base_url=api_url, timeout=10))
        worker_client = await stack.enter_async_context(httpx.AsyncClient(base_url=worker_url, timeout=10))

        api_health = (await api_client.get("/health")).json()
        worker_health = (await worker_client.get("/health")).json()
        assert (api_health["role"], api_health["scheduler"]) == ("api", "disabled")
        assert (worker_health["role"], worker_health["scheduler"]) == ("worker", "running")
        # The worker answers nothing but its probes.
        for path in ("/api/requests", "/api/openapi", "/v1/batches", "/", "/batches"):
            assert (await worker_client.get(path)).status_code == 404, path
        assert (await worker_client.get("/metrics")).status_code == 200

        for n in range(COUNT):
            body = request_payload(f"role-{n:02d}", webhook(receiver.url + "/hook"))
            assert (await api_client.post("/api/requests", json=body)).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes()) >= COUNT, timeout=60)
        assert (await api_client.get("/requests")).status_code == 200  # the UI is on the api side

    # Every batch move and every send was the worker's: the api process ran no pipeline step.
    db = Database(database_url)
    try:
        async with db.transaction() as session:
            movers = set(await session.scalars(select(BatchEvent.worker)))
            senders = set(await session.scalars(select(DeliveryAttempt.worker)))
    finally:
        await db.dispose()
    worker_name = f"{socket.gethostname()[:50]}:{worker.pid}"
    assert movers == {worker_name}, f"api process {api.pid} moved batches: {movers}"
    assert senders == {worker_name}


def test_the_role_flag_is_checked() -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--role", "scheduler"])
