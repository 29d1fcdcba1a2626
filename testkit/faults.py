"""Faults caused for real in a running app, and what the SIGKILL suite (tests/faults) shares:
a client that submits through a kill, and the counts that say nothing is left open."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from datetime import timedelta
from unittest import mock

import httpx
from sqlalchemy import func, select, update

from app.core.dispatch import AHEAD
from app.db.models import Batch, Delivery, Request
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.config import Settings
from testkit.apps import RunningApp
from testkit.builders import request_payload, webhook
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.waiting import wait_until


async def kill_runs(app: RunningApp, inference: InferenceStandin, key: str, times: int) -> None:
    """Each time the line `key` is running, its process "dies": the lease passes to an owner
    that is gone, as after a SIGKILL, and the run stops here when its heartbeat sees that.
    The line must not finish on its own meanwhile (give it a long `delay_for`)."""
    for run in range(1, times + 1):
        await wait_until(lambda n=run: inference.calls_by_key[key] == n, timeout=20, what=f"run {run}")
        async with app.db.transaction() as session:
            await session.execute(
                update(Batch)
                .where(Batch.status == "processing")
                .values(leased_by="gone:1:dead", leased_until=utcnow())
            )


async def kill_submission(app: RunningApp) -> None:
    """The process submitting a batch "dies": its lease passes to an owner that is gone, as after
    a SIGKILL, so its work stops when its heartbeat sees that, and the lease runs out a lease
    later, when the next submission round takes the batch over."""
    lease = timedelta(seconds=app.settings.lease_seconds)
    async with app.db.transaction() as session:
        await session.execute(
            update(Batch)
            .where(Batch.status == "submitting")
            .values(leased_by="gone:1:dead", leased_until=utcnow() + lease)
        )


async def submit_all(url: str, ids: list[str], hook: str) -> dict[str, int]:
    """Send every request (8 at a time); the status each got, absent when no answer came."""
    answers: dict[str, int] = {}
    slots = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:

        async def one(custom_id: str) -> None:
            async with slots:
                try:
                    response = await client.post(
                        "/api/requests", json=request_payload(custom_id, webhook(hook))
                    )
                except httpx.TransportError:
                    return  # the process died under it: unknown, the client sends it again
                answers[custom_id] = response.status_code

        await asyncio.gather(*(one(i) for i in ids))
    return answers


async def counts(db: Database) -> tuple[int, int]:
    """(requests not succeeded, deliveries not delivered): both 0 when nothing is stuck."""
    async with db.transaction() as session:
        open_requests = await session.scalar(select(func.count()).where(Request.status != "succeeded"))
        open_deliveries = await session.scalar(select(func.count()).where(Delivery.status != "delivered"))
    return int(open_requests or 0), int(open_deliveries or 0)


async def batch_statuses(db: Database) -> dict[str, int]:
    """How many batches are in each status (what a kill caught them in)."""
    async with db.transaction() as session:
        rows = (await session.execute(select(Batch.status, func.count()).group_by(Batch.status))).all()
    return {str(status): int(n) for status, n in rows}


def resendable(env: dict[str, str], kills: int) -> int:
    """The most duplicates a receiver can honestly get from a run whose one destination is served
    by an app process started with `env` (as testkit.processes.app_process starts it) and killed
    `kills` times.

    A delivery is sent twice only if the process died after the receiver took it and before its
    attempt was recorded; until that record the dispatcher keeps it claimed, and it claims at
    most AHEAD times its sends to one destination (AHEAD x DELIVERY_DESTINATION_CONCURRENCY, and
    AHEAD x DELIVERY_CONCURRENCY in all): app.core.dispatch. A kill can resend no more than that.
    """
    with mock.patch.dict(os.environ, env):  # the settings the child process reads
        settings = Settings()
    slots = min(settings.delivery_concurrency, settings.delivery_destination_concurrency)
    return AHEAD * slots * kills


def delivered_count(receiver: WebhookReceiver, ids: list[str]) -> tuple[set[str], int]:
    """(the ids never delivered, how many deliveries were duplicates). A duplicate must be the
    same delivery sent again (one webhook-id per request, what receivers deduplicate on), never
    a second delivery of a request."""
    successes = receiver.successes()
    delivered = Counter(r.custom_id for r in successes)
    delivery_ids = {(r.custom_id, r.headers.get("webhook-id")) for r in successes}
    assert len(delivery_ids) == len(delivered), "a request was delivered under two webhook-ids"
    return set(ids) - set(delivered), sum(n - 1 for n in delivered.values())
