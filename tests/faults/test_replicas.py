"""Three full app processes on one PostgreSQL (issue 13): under load, no request runs twice and
no delivery is sent twice when nothing crashes, every request is delivered, and every replica
takes a share of the batches and of the deliveries."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.db.models import Batch, BatchEvent, DeliveryAttempt
from app.db.session import Database
from testkit import IN_CI, migrate, postgres_database, request_payload, wait_until, webhook
from testkit.processes import app_env, app_process
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPLICAS = 3
COUNT = 300


async def test_three_replicas_run_and_deliver_each_request_once(
    inference: InferenceStandin, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    inference.delay_seconds = 0.01
    async with postgres_database() as url, AsyncExitStack() as stack:
        await migrate(url)
        env = app_env(url, inference.url, tmp_path, BATCH_MAX_REQUESTS="10", LEASE_SECONDS="60")
        started = [await stack.enter_async_context(app_process(env)) for _ in range(REPLICAS)]
        urls = [u for _, u in started]
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=u, timeout=10)) for u in urls]
        slots = asyncio.Semaphore(32)

        async def submit(n: int) -> int:
            async with slots:  # spread over the replicas, as a load balancer would
                body = request_payload(f"rep-{n:03d}", webhook(receiver.url + "/hook"))
                return (await clients[n % REPLICAS].post("/api/requests", json=body)).status_code

        assert set(await asyncio.gather(*(submit(n) for n in range(COUNT)))) == {202}
        await receiver.wait_for(lambda r: len(r.successes()) >= COUNT, timeout=120)
        db = Database(url)
        try:
            state: dict[str, object] = {}

            async def settled() -> bool:
                # The receiver has every result; the batches' last steps and the attempts'
                # records follow within a tick or two.
                async with db.transaction() as session:
                    # A replica may open an empty `building` batch just as another takes the
                    # last pending requests: it waits for the group's next request, or is
                    # ended `cancelled` once a tick finds the group empty. Either is settled.
                    empty = Batch.status.in_(("building", "cancelled")) & (Batch.request_count == 0)
                    state["open batches"] = (
                        await session.execute(
                            select(Batch.id, Batch.status).where(Batch.status != "done", ~empty)
                        )
                    ).all()
                    state["attempts"] = await session.scalar(
                        select(func.count()).select_from(DeliveryAttempt)
                    )
                return not state["open batches"] and int(state["attempts"]) >= COUNT  # type: ignore[call-overload]

            await wait_until(
                settled, timeout=30, what=lambda: f"every batch done and attempt recorded: {state}"
            )
            async with db.transaction() as session:
                runners = Counter(
                    await session.scalars(
                        select(BatchEvent.worker).where(BatchEvent.to_status == "processing")
                    )
                )
                senders = Counter(await session.scalars(select(DeliveryAttempt.worker)))
        finally:
            await db.dispose()
    ids = {f"rep-{n:03d}" for n in range(COUNT)}
    ran = Counter(call["key"] for call in inference.calls)
    sent = Counter(r.custom_id for r in receiver.received)
    assert set(ran) == ids and max(ran.values()) == 1, "a request ran twice"
    assert set(sent) == ids and max(sent.values()) == 1, "a delivery was sent twice"
    # 30 batches and 300 deliveries: a replica left out would mean claims do not spread.
    names = {f"{socket.gethostname()[:50]}:{process.pid}" for process, _ in started}
    print(f"batches started per replica: {dict(runners)}; deliveries sent: {dict(senders)}")
    assert set(runners) == names, f"not every replica ran batches: {dict(runners)}"
    assert set(senders) == names, f"not every replica sent deliveries: {dict(senders)}"


@pytest.mark.skipif(
    shutil.which("faketime") is None and not IN_CI, reason="faketime (Debian package) is not installed"
)
async def test_a_replica_whose_clock_runs_ahead_takes_over_no_lease(
    inference: InferenceStandin, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    # Leases run out by the database's clock: a replica 90 s ahead (libfaketime) must not take
    # over a batch another replica is running under a 20 s lease.
    inference.delay_seconds = 0.2
    async with postgres_database() as url, AsyncExitStack() as stack:
        await migrate(url)
        env = app_env(url, inference.url, tmp_path, LOCAL_CONCURRENCY="2", LEASE_SECONDS="20")
        _, first = await stack.enter_async_context(app_process(env))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=first, timeout=10))
        for n in range(30):
            body = request_payload(f"skew-{n:02d}", webhook(receiver.url + "/hook"))
            assert (await client.post("/api/requests", json=body)).status_code == 202
        await wait_until(lambda: inference.in_flight > 0, timeout=20, what="the first replica's run")
        await stack.enter_async_context(app_process(env, wrapper=("faketime", "-f", "+90s")))
        await receiver.wait_for(lambda r: len(r.successes()) >= 30, timeout=60)
    ran = Counter(call["key"] for call in inference.calls)
    assert len(ran) == 30 and max(ran.values()) == 1, f"run twice: {[k for k, n in ran.items() if n > 1]}"
