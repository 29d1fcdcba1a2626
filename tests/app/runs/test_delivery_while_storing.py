"""Delivery keeps its turns at SQLite's one connection while a local run stores a long stream of
results (app.db.turns). Before, a run's eight result writers and page readers queued ahead of
every delivery transaction, and a woken waiter lost the connection to whoever asked next:
delivery ran at 10-25 a second while 2,600 results a second were stored, and 1,000,000 results
waited tens of minutes after inference for their delivery.

Counted in turns, not seconds: the run's transactions that commit while one due delivery is
claimed and recorded. Fair, each of those two waits for at most one of the run's (which stores the
results of every batch that has some waiting, app.core.runs.writer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import distinct, event, func, insert, select

from app.backends.base import BatchLine, LineResult
from app.channels.base import SendResult
from app.core import delivery
from app.core.rules.effective import EffectiveSettings
from app.core.runs.local import PARALLEL_BATCHES, LocalRunner
from app.db.models import Batch, Delivery, Request
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.statuses import BatchStatus, DeliveryStatus, Outcome, RequestStatus
from testkit import fast_settings, wait_until

LINES_PER_BATCH = 1500  # a stream far longer than the measurement: the run is stopped after it
CHANNELS = {"webhook": SimpleNamespace(available=True, timeout_seconds=5.0)}
# The run's transactions (its result writer's, its batches' page reads): at most one ahead of each
# of the delivery's two (claim, record), and one more under way as the claim asked.
RUN_TASKS = ("local results", "local-batch-")
MOST_RUN_COMMITS_MEANWHILE = 3


class InstantBackend:
    """A line runner answering every line at once: results come as fast as they are stored."""

    name = "local"
    base_url = "http://instant.invalid"

    async def run(self, lines: AsyncIterable[BatchLine]) -> AsyncIterator[LineResult]:
        async for line in lines:
            yield LineResult(line.request_id, line.custom_id, {"status_code": 200, "body": {}}, None)


async def processing_batches(db: Database, count: int, lines: int) -> None:
    now = utcnow()
    async with db.engine.begin() as conn:
        for b in range(count):
            batch_id = (
                await conn.execute(
                    insert(Batch).returning(Batch.id),
                    {
                        "backend": "local",
                        "endpoint": "/v1/chat/completions",
                        "model": "m",
                        "origin": "api",
                        "status": BatchStatus.PROCESSING,
                        "request_count": lines,
                        "bytes": 0,
                        "created_at": now,
                        "status_changed_at": now,
                    },
                )
            ).scalar_one()
            await conn.execute(
                insert(Request),
                [
                    {
                        "custom_id": f"b{b}-{n}",
                        "origin": "api",
                        "backend": "local",
                        "endpoint": "/v1/chat/completions",
                        "model": "m",
                        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                        "body_bytes": 60,
                        "delivery": {"type": "none"},
                        "status": RequestStatus.PROCESSING,
                        "batch_id": batch_id,
                        "created_at": now,
                    }
                    for n in range(lines)
                ],
            )


async def due_delivery(db: Database) -> int:
    now = utcnow()
    async with db.engine.begin() as conn:
        row = {
            "channel": "webhook",
            "target": {"type": "webhook", "url": "http://receiver.example/hook"},
            "destination": "webhook:http://receiver.example",
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "total_attempts": 0,
            "next_attempt_at": now - timedelta(seconds=1),
            "created_at": now,
        }
        return int((await conn.execute(insert(Delivery).returning(Delivery.id), row)).scalar_one())


async def every_run_stored(db: Database) -> bool:
    async with db.transaction() as session:
        batches = await session.scalar(
            select(func.count(distinct(Request.batch_id))).where(Request.status == RequestStatus.SUCCEEDED)
        )
    return batches == PARALLEL_BATCHES


async def test_a_due_delivery_waits_for_few_result_writes(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    settings = fast_settings(sqlite_url)
    commits = 0

    def counted(_connection: Any) -> None:
        nonlocal commits
        task = asyncio.current_task()
        if task is not None and task.get_name().startswith(RUN_TASKS):
            commits += 1

    event.listen(db.engine.sync_engine, "commit", counted)
    runner = LocalRunner(db, EffectiveSettings(db, settings), InstantBackend(), "test")  # type: ignore[arg-type]
    try:
        await processing_batches(db, PARALLEL_BATCHES, LINES_PER_BATCH)
        delivery_id = await due_delivery(db)
        assert await runner.claim_and_start() == PARALLEL_BATCHES
        # Every run is storing: each has written a few times.
        await wait_until(lambda: every_run_stored(db), timeout=30, what="every run to store results")

        before = commits
        claimed = await delivery.claim_due(db, "test", settings, CHANNELS, 10)  # type: ignore[arg-type]
        assert [row_id for row_id, _ in claimed] == [delivery_id]
        message = claimed[0][1]
        sent = delivery.Sent(message, delivery_id, SendResult(Outcome.SUCCESS, http_status=200), utcnow(), 1)
        await delivery.record(db, "test", settings, [sent])
        meanwhile = commits - before

        # Still storing: the delivery did not simply wait for the stream's end.
        assert any(not task.done() for task in runner.tasks.values())
        assert meanwhile <= MOST_RUN_COMMITS_MEANWHILE, f"{meanwhile} of the run's transactions went first"
        async with db.transaction() as session:
            status = await session.scalar(select(Delivery.status).where(Delivery.id == delivery_id))
        assert status == DeliveryStatus.DELIVERED
    finally:
        await runner.stop()
        await db.dispose()
