"""RabbitMQ closing the app's connections mid-run (issue 13), with the app a child process as users
run it: intake from a queue, results to a queue. The broker force-closes both connections and, for
a few seconds, the app cannot connect again (as during a broker restart). The app keeps serving,
/health shows the broker down then up, intake and deliveries resume, and every request published
before, during and after ends delivered, exactly once in the database."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.db.models import Delivery, Request
from app.db.session import Database
from testkit import (
    Amqp,
    close_connections,
    rabbitmqctl_available,
    request_payload,
    require_service,
    to_queue,
    wait_until,
)
from testkit.processes import app_env, app_process
from testkit.standins.inference import InferenceStandin
from testkit.standins.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbitmq

BEFORE, DURING, AFTER = 60, 20, 20


async def broker_health(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get("/health")
    assert answer.status_code == 200, answer.text  # the broker down is not the gateway down
    return answer.json()["rabbitmq"]


async def counts(db: Database) -> tuple[int, dict[str, int]]:
    """Requests stored, and deliveries by status."""
    async with db.transaction() as session:
        requests = await session.scalar(select(func.count()).select_from(Request))
        rows = await session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return int(requests or 0), {status: int(n) for status, n in rows}


async def test_broker_closes_the_app_connections_mid_run_nothing_lost(
    database_url: str, inference: InferenceStandin, amqp: Amqp, tmp_path: Path
) -> None:
    require_service("rabbitmqctl (to close connections from the broker side)", rabbitmqctl_available())
    intake, results = amqp.name("intake"), amqp.name("results")
    total = BEFORE + DURING + AFTER  # from the intake queue, plus one through REST during the outage
    db = Database(database_url)
    log_path = tmp_path / "app.log"
    # The app reaches the broker through a proxy, so the test can keep it from reconnecting.
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.resume()
    env = app_env(
        database_url,
        inference.url,
        tmp_path,
        RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
        RABBITMQ_INPUT_QUEUE=intake,
        RABBITMQ_REQUEUE_DELAY_SECONDS="0.2",
        RABBITMQ_RECONNECT_MAX_SECONDS="2",
    )
    try:
        with log_path.open("w") as log:
            async with (
                app_process(env, stderr=log) as (process, url),
                httpx.AsyncClient(base_url=url, timeout=10) as client,
            ):

                async def up() -> bool:
                    health = await broker_health(client)
                    return health["state"] == "connected" and health["consuming"]

                async def down() -> bool:
                    health = await broker_health(client)
                    return health["state"] == "disconnected" and not health["consuming"]

                async def publish(numbers: range) -> None:
                    for n in numbers:
                        await amqp.publish(intake, request_payload(f"bc-{n:03d}", to_queue(results)))

                await wait_until(up, timeout=30, what="the app to consume its intake queue")
                await publish(range(BEFORE))
                await wait_until(lambda: _at_least_delivered(db, 10), timeout=60, what="the first deliveries")

                await proxy.refuse()  # no reconnecting for now; the open connections stay
                # Only this app's connections: their names carry its host and process id.
                assert await close_connections(f"batchgate {socket.gethostname()}:{process.pid}:") == 2
                await wait_until(down, timeout=30, what="/health to show the broker down")
                # The broker closed them (the errors since are the refused reconnections).
                assert "CONNECTION_FORCED" in log_path.read_text()
                await publish(range(BEFORE, BEFORE + DURING))  # they wait in the queue
                # REST intake still works; its delivery waits for the publishing connection.
                rest = request_payload(f"bc-{total:03d}", to_queue(results))
                assert (await client.post("/api/requests", json=rest)).status_code == 202

                await proxy.resume()
                await wait_until(up, timeout=60, what="/health to show the broker back")
                await publish(range(BEFORE + DURING, total))
                received = await amqp.drain(results, until=total + 1, timeout=120)
                assert {json.loads(m.body)["custom_id"] for m in received} == {
                    f"bc-{n:03d}" for n in range(total + 1)
                }

                async def all_delivered() -> bool:
                    return await counts(db) == (total + 1, {"delivered": total + 1})

                await wait_until(all_delivered, timeout=60, what="every delivery recorded delivered")
        assert await amqp.count(intake) == 0
    finally:
        await proxy.pause()
        await db.dispose()


async def _at_least_delivered(db: Database, n: int) -> bool:
    return (await counts(db))[1].get("delivered", 0) >= n
