"""The batcher: closing by count, bytes, age and operator, and racing intake on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from app.core import batching
from app.core.actions import batches as batch_actions
from app.core.intake import accept as intake
from app.core.rules.errors import Conflict
from app.core.runs import local as local_runs
from app.core.runs.lines import input_line
from app.db.migrate import upgrade
from app.db.models import Batch, BatchEvent, Request
from app.db.session import Database
from app.ground.config import Settings
from testkit import (
    NO_DELIVERY,
    StartApp,
    chat,
    fast_settings,
    postgres_database,
    request_payload,
    wait_until,
)


def payload(custom_id: str, model: str = "m", content: str = "hi") -> dict[str, Any]:
    return request_payload(custom_id, NO_DELIVERY, model=model, messages=chat(content))


async def batches(db: Database) -> list[Batch]:
    async with db.transaction() as session:
        return list((await session.scalars(select(Batch).order_by(Batch.id))).all())


async def request_statuses(db: Database) -> Counter[str]:
    async with db.transaction() as session:
        rows = await session.execute(select(Request.status, func.count()).group_by(Request.status))
        return Counter({status: count for status, count in rows})


def settings_for(db: Database, **overrides: Any) -> Settings:
    return fast_settings(db.url, **{"local_batch_max_age_seconds": 3600, **overrides})


async def test_building_batch_is_visible_and_closes_by_count(db: Database) -> None:
    settings = settings_for(db, batch_max_requests=3)
    for i in range(2):
        await intake.accept(db, settings, payload(f"r{i}"))
    assert await batching.form_due_batches(db, settings) == []
    [building] = await batches(db)
    assert (building.status, building.request_count, building.model) == ("building", 2, "m")
    assert building.bytes > 0

    for i in range(2, 7):
        await intake.accept(db, settings, payload(f"r{i}"))
    closed = await batching.form_due_batches(db, settings)
    assert closed == [building.id]
    # The next pass opens a new building batch for the leftovers and closes it too (still ≥ 3).
    closed += await batching.form_due_batches(db, settings)
    await batching.form_due_batches(db, settings)
    state = [(b.status, b.request_count) for b in await batches(db)]
    assert state == [("ready", 3), ("ready", 3), ("building", 1)]
    assert (await request_statuses(db)) == Counter({"batched": 6, "pending": 1})


async def test_groups_are_batched_separately(db: Database) -> None:
    settings = settings_for(db, local_batch_max_age_seconds=0)
    await intake.accept(db, settings, payload("a", model="m1"))
    await intake.accept(db, settings, payload("b", model="m2"))
    await batching.form_due_batches(db, settings)
    await batching.form_due_batches(db, settings)
    assert sorted((b.model, b.status, b.request_count) for b in await batches(db)) == [
        ("m1", "ready", 1),
        ("m2", "ready", 1),
    ]


async def test_closes_by_bytes_and_cuts_before_the_limit(db: Database) -> None:
    one = len(input_line("r0", "/v1/chat/completions", payload("r0", content="x" * 100)["body"]))
    settings = settings_for(db, batch_max_bytes=one * 2 + one // 2)
    for i in range(3):
        await intake.accept(db, settings, payload(f"r{i}", content="x" * 100))
    assert len(await batching.form_due_batches(db, settings)) == 1
    ready = [b for b in await batches(db) if b.status == "ready"]
    assert [(b.request_count, b.bytes) for b in ready] == [(2, one * 2)]
    assert (await request_statuses(db)) == Counter({"batched": 2, "pending": 1})


async def test_closes_by_age(db: Database) -> None:
    settings = settings_for(db, local_batch_max_age_seconds=0.2)
    await intake.accept(db, settings, payload("old"))
    assert await batching.form_due_batches(db, settings) == []
    closed: list[int] = []

    async def closes() -> bool:
        closed.extend(await batching.form_due_batches(db, settings))
        return bool(closed)

    await wait_until(closes, timeout=5, what="the batch to close by age")
    async with db.transaction() as session:
        reason = await session.scalar(select(BatchEvent.reason).where(BatchEvent.to_status == "ready"))
    assert reason == "oldest request waited 0.2s"


async def test_operator_close_now(db: Database) -> None:
    settings = settings_for(db)
    await intake.accept(db, settings, payload("r"))
    await batching.form_due_batches(db, settings)
    [building] = await batches(db)
    await batch_actions.close_batch(db, building.id)
    assert await batching.form_due_batches(db, settings) == [building.id]
    with pytest.raises(Conflict):
        await batch_actions.close_batch(db, building.id)  # no longer building


@pytest.mark.postgres
async def test_intake_racing_the_batcher_loses_nothing_on_postgres() -> None:
    """Many writers, two batcher replicas and a submitter at once: every request lands in
    exactly one batch, batch counts match their rows, and no request joins a submitted batch."""
    writers, per_writer, max_per_batch = 16, 40, 7
    async with postgres_database() as url:
        await asyncio.to_thread(upgrade, url)
        replicas = [Database(url), Database(url)]
        settings = fast_settings(url, batch_max_requests=max_per_batch, local_batch_max_age_seconds=0)
        writing = True

        async def write(w: int) -> None:
            for i in range(per_writer):
                await intake.accept(replicas[w % 2], settings, payload(f"w{w}-{i}", model=f"m{i % 2}"))

        async def batcher(db: Database) -> None:
            while writing:
                await batching.form_due_batches(db, settings)

        async def submitter(db: Database) -> None:
            while writing:
                await local_runs.submit_ready(db, ["local"])

        background = [asyncio.create_task(batcher(db)) for db in replicas]
        background.append(asyncio.create_task(submitter(replicas[0])))
        try:
            await asyncio.gather(*(write(w) for w in range(writers)))
        finally:
            writing = False
            await asyncio.gather(*background)
        # Drain: whatever is left pending is closed by further passes.
        for _ in range(50):
            if not (await request_statuses(replicas[0])).get("pending"):
                break
            await batching.form_due_batches(replicas[0], settings)
        await local_runs.submit_ready(replicas[0], ["local"], limit=10_000)

        db = replicas[0]
        async with db.transaction() as session:
            total = await session.scalar(select(func.count()).select_from(Request))
            unbatched = await session.scalar(select(func.count()).where(Request.batch_id.is_(None)))
            counts = select(Request.batch_id, func.count()).group_by(Request.batch_id)
            per_batch = dict((await session.execute(counts)).all())
            stale = await session.scalar(select(func.count()).where(Request.status != "processing"))
        assert total == writers * per_writer
        assert unbatched == 0
        assert stale == 0, "a request stayed behind a submitted batch"
        for batch in await batches(db):
            assert batch.status == "processing"
            assert batch.request_count == per_batch[batch.id] <= max_per_batch
        for database in replicas:
            await database.dispose()


async def test_a_building_batch_left_with_no_pending_request_ends_cancelled(
    database_url: str, start_app: StartApp
) -> None:
    """Cancelling the only pending request of a building group ends the building batch (issue 25):
    before, it stayed `building` with no request for ever."""
    settings = fast_settings(database_url, local_batch_max_age_seconds=3600)
    async with start_app(settings) as app:
        assert (await app.submit("lonely", None)).status_code == 202

        async def building() -> int | None:
            listed = (await app.client.get("/api/batches", params={"status": "building"})).json()["data"]
            return listed[0]["id"] if listed else None

        await wait_until(building, timeout=10, what="the group's building batch")
        batch_id = await building()
        cancel = await app.client.post("/api/requests/lonely/cancel")
        assert cancel.status_code == 202, cancel.text

        async def ended() -> bool:
            return (await app.client.get(f"/api/batches/{batch_id}")).json()["status"] == "cancelled"

        await wait_until(ended, timeout=10, what="the empty building batch to end")
        detail = (await app.client.get(f"/api/batches/{batch_id}")).json()
        assert detail["request_count"] == 0
        last = detail["events"][-1]
        assert (last["from_status"], last["to_status"]) == ("building", "cancelled")
        assert "no pending request" in last["reason"]
        page = (await app.client.get(f"/batches/{batch_id}")).text
        assert "no pending request" in page

        # A new request of the same group opens a new building batch, never the ended one.
        assert (await app.submit("later", None)).status_code == 202
        await wait_until(building, timeout=10, what="a new building batch")
        assert await building() != batch_id
