"""Retention on SQLite and PostgreSQL: ended batches and batchless requests older than
RETENTION_DAYS are purged with everything they own, in chunks, and never while anything of them
still waits for delivery; the operator purges at once from the UI or the API; a new SQLite
database gives purged space back."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.backends.openai import OpenAIBackend
from app.core import retention
from app.core.actions import requests as request_actions
from app.core.read import queries
from app.core.rules.owners import ADMIN
from app.core.rules.states import B, D, R
from app.db.models import (
    Batch,
    BatchEvent,
    Delivery,
    DeliveryAttempt,
    Destination,
    DestinationEvent,
    File,
    Request,
    RequestEvent,
)
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.steps import Step
from testkit import (
    StartApp,
    check,
    fast_settings,
    migrate,
    new_batch,
    postgres_database,
    sqlite_url,
    wait_until,
)
from testkit.openai import openai_settings
from testkit.standins.openai_batch import OpenAIBatchStandin

HX = {"HX-Request": "true"}
OLD, RECENT = 40, 5  # days since the end; RETENTION_DAYS is 30
OWNED = (Request, Delivery, DeliveryAttempt, RequestEvent, BatchEvent, File)


@dataclass
class Seeded:
    batch_id: int | None
    request_ids: list[int]


async def seed(
    db: Database,
    data_dir: Path | None = None,
    *,
    status: str = B.DONE,
    ended_days_ago: float = OLD,
    deliveries: tuple[str | None, ...] = (D.DELIVERED,),
    event_delivery: str | None = D.DELIVERED,
    announce: bool = False,
    request_status: str = R.SUCCEEDED,
    batchless: bool = False,
    body: str = "hi",
    **columns: Any,
) -> Seeded:
    """A batch (or, batchless, lone requests) as the pipeline leaves it, `ended_days_ago`: one
    request per entry of `deliveries`, each with an audit row and that delivery (None: none) with
    an attempt; a timeline event (announced through `event_delivery`); and, with `data_dir`, a
    file it produced. `columns` are the batch's own."""
    ended = utcnow() - timedelta(days=ended_days_ago)
    async with db.transaction() as session:
        batch = None
        if not batchless:
            batch = new_batch(status=status, request_count=len(deliveries), created_at=ended, **columns)
            # A retried batch keeps its old finished_at: only the status says it has ended.
            batch.finished_at = ended
            session.add(batch)
            await session.flush()
            event = BatchEvent(batch_id=batch.id, to_status=status, at=ended, announce=announce)
            session.add(event)
            await session.flush()
            if event_delivery:
                session.add(delivery_row(event_delivery, ended, batch_event_id=event.id))
            if data_dir is not None:
                session.add(produced_file(data_dir, batch.id, ended))
        requests = [request_row(batch, request_status, ended, body) for _ in deliveries]
        session.add_all(requests)
        await session.flush()
        for request, status_of_delivery in zip(requests, deliveries, strict=True):
            session.add(RequestEvent(request_id=request.id, action="redeliver", at=ended))
            if status_of_delivery is not None:
                delivery = delivery_row(status_of_delivery, ended, request_id=request.id)
                session.add(delivery)
                await session.flush()
                session.add(
                    DeliveryAttempt(
                        delivery_id=delivery.id, number=1, started_at=ended, duration_ms=5, outcome="success"
                    )
                )
    return Seeded(batch.id if batch else None, [r.id for r in requests])


def produced_file(data_dir: Path, batch_id: int, ended: Any) -> File:
    """A batch's output file, its bytes under `data_dir` as the finish step writes them."""
    path = f"files/file-of-{batch_id}"
    (data_dir / "files").mkdir(parents=True, exist_ok=True)
    (data_dir / path).write_bytes(b"{}\n")
    return File(
        id=f"file-of-{batch_id}",
        purpose="batch_output",
        filename="out.jsonl",
        bytes=3,
        path=path,
        batch_id=batch_id,
        created_at=ended,
    )


_serial = iter(range(1, 10**9))


def request_row(batch: Batch | None, status: str, ended: Any, body: str) -> Request:
    return Request(
        custom_id=f"keep-or-purge/{next(_serial)}",
        scope="",
        origin="api",
        backend="local",
        endpoint="/v1/chat/completions",
        model="stand-in",
        body={"model": "stand-in", "messages": [{"role": "user", "content": body}]},
        body_bytes=len(body),
        delivery={"type": "webhook", "webhook_url": "http://127.0.0.1:9/hook"},
        status=status,
        batch_id=batch.id if batch else None,
        created_at=ended,
        completed_at=ended if status != R.PENDING else None,
    )


def delivery_row(status: str, ended: Any, **owner: int) -> Delivery:
    return Delivery(
        **owner,
        channel="webhook",
        target={"type": "webhook", "webhook_url": "http://127.0.0.1:9/hook"},
        status=status,
        attempts=1,
        total_attempts=1,
        created_at=ended,
        next_attempt_at=ended if status in (D.PENDING, D.RETRYING) else None,
    )


async def batch_ids(db: Database) -> set[int]:
    async with db.transaction() as session:
        return set((await session.scalars(select(Batch.id))).all())


async def request_ids(db: Database) -> set[int]:
    async with db.transaction() as session:
        return set((await session.scalars(select(Request.id))).all())


async def counts(db: Database) -> dict[str, int]:
    async with db.transaction() as session:
        return {
            model.__tablename__: await session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Batch, *OWNED)
        }


async def drain(db: Database, data_dir: Path, days: int = 30) -> int:
    """Run the scheduler's purge step until it says nothing more waits; returns the runs."""
    for runs in range(1, 50):
        if not await retention.step(db, str(data_dir), days):
            return runs
    raise AssertionError("the purge step never ran out of work")


async def test_old_ended_batches_go_with_everything_they_own_and_the_rest_stays(
    db: Database, tmp_path: Path
) -> None:
    gone = [
        await seed(db, tmp_path),
        await seed(db, tmp_path, status=B.FAILED, deliveries=(D.DELIVERY_FAILED, D.DELIVERED)),
        await seed(db, status=B.CANCELLED, deliveries=(D.SUPERSEDED, D.DELIVERED), event_delivery=None),
        await seed(db, status=B.EXPIRED, request_status=R.EXPIRED),
        await seed(db, batchless=True, request_status=R.CANCELLED, deliveries=(D.DELIVERED,)),
    ]
    kept = [
        await seed(db, tmp_path, deliveries=(D.DELIVERED, D.RETRYING)),  # a result still retrying
        await seed(db, deliveries=(D.DELIVERED, D.PENDING)),  # one still queued
        await seed(db, event_delivery=D.RETRYING),  # its end is still being announced
        await seed(db, event_delivery=None, announce=True),  # its end is not even queued yet
        await seed(db, tmp_path, ended_days_ago=RECENT),  # within the retention
        await seed(db, leased_by="another", leased_until=utcnow() + timedelta(hours=1)),  # held
        await seed(db, origin="openai_batch", files_written_at=None),  # its files not written yet
        await seed(db, status=B.READY, request_status=R.BATCHED, deliveries=(None,)),  # retried
        await seed(db, batchless=True, request_status=R.CANCELLED, deliveries=(D.RETRYING,)),
        await seed(db, batchless=True, request_status=R.PENDING, deliveries=(None,)),  # never ended
    ]
    before = await counts(db)

    await drain(db, tmp_path)

    assert await batch_ids(db) == {s.batch_id for s in kept if s.batch_id}
    assert await request_ids(db) == {rid for s in kept for rid in s.request_ids}
    gone_requests = sum(len(s.request_ids) for s in gone)
    after = await counts(db)
    # Every row a purged batch or request owned went with it, and no other row did.
    assert before["batches"] - after["batches"] == 4 == len([s for s in gone if s.batch_id])
    assert before["requests"] - after["requests"] == gone_requests
    assert before["delivery_attempts"] - after["delivery_attempts"] == gone_requests
    assert before["request_events"] - after["request_events"] == gone_requests
    assert before["deliveries"] - after["deliveries"] == gone_requests + 3  # + 3 batch events'
    assert before["batch_events"] - after["batch_events"] == 4
    async with db.transaction() as session:
        left = set((await session.scalars(select(File.id))).all())
    assert left == {f"file-of-{kept[0].batch_id}", f"file-of-{kept[4].batch_id}"}
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == sorted(left)

    # Once its last delivery ends, the batch that was retrying goes too.
    async with db.transaction() as session:
        retrying = Delivery.status == D.RETRYING
        await session.execute(update(Delivery).where(retrying).values(status=D.DELIVERED))
    await drain(db, tmp_path)
    assert kept[0].batch_id not in await batch_ids(db)
    assert not (tmp_path / "files" / f"file-of-{kept[0].batch_id}").exists()


async def test_more_than_a_chunk_is_purged_by_repeated_runs_of_the_step(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH_CHUNK", 3)
    monkeypatch.setattr(retention, "LONE_CHUNK", 2)
    for _ in range(7):
        await seed(db, deliveries=(D.DELIVERED, D.DELIVERED))
    for _ in range(3):
        await seed(db, batchless=True, request_status=R.CANCELLED)
    left = []
    while await retention.step(db, str(tmp_path), 30):
        left.append((len(await batch_ids(db)), len(await request_ids(db))))
        assert len(left) < 10
    # 3 batches (6 requests) and 2 lone requests per run; the last run finds the rest.
    assert left == [(4, 9), (1, 2)]
    assert await counts(db) == dict.fromkeys(["batches", *(m.__tablename__ for m in OWNED)], 0)

    # A chunk also stops taking batches once their requests pass the budget (always one at least).
    monkeypatch.setattr(retention, "REQUEST_BUDGET", 3)
    for _ in range(3):
        await seed(db, deliveries=(D.DELIVERED, D.DELIVERED))
    purged = await retention.purge_chunk(db, str(tmp_path), utcnow() - timedelta(days=30))
    assert (purged.batches, purged.requests, purged.more) == (1, 2, True)


async def test_purge_now_from_the_ui_and_the_api(database_url: str, start_app: StartApp) -> None:
    # No scheduler: its own purge must not get there first.
    settings = fast_settings(database_url, retention_days=20, scheduler_enabled=False)
    async with start_app(settings) as app:
        for _ in range(2):
            await seed(app.db, deliveries=(D.DELIVERED, D.DELIVERY_FAILED))
        recent = await seed(app.db, ended_days_ago=RECENT)
        lone = await seed(app.db, batchless=True, request_status=R.CANCELLED)

        page = (await app.client.get("/settings")).text
        assert "Purge now" in page and 'name="older_than_days" value="20"' in page
        refused = await app.client.post("/settings/purge", data={"older_than_days": "0"}, headers=HX)
        assert refused.status_code == 422 and "from 1 to 36500" in refused.text
        assert len(await batch_ids(app.db)) == 3

        answer = await app.client.post("/settings/purge", data={"older_than_days": "20"}, headers=HX)
        assert answer.status_code == 200 and 'class="toast ok"' in answer.text
        assert "Purged 2 batches and 5 requests that ended more than 20 days ago" in answer.text
        assert await batch_ids(app.db) == {recent.batch_id}
        assert lone.request_ids[0] not in await request_ids(app.db)

        document = (await app.client.get("/api/openapi.json")).json()
        bad = await app.client.post("/api/purge", params={"older_than_days": 0})
        check(document, "/api/purge", "post", bad, 400, "bad_request")
        nothing = await app.client.post("/api/purge")  # RETENTION_DAYS: the recent batch stays
        check(document, "/api/purge", "post", nothing, 200)
        assert nothing.json() == answer_of(20, batches=0, requests=0)
        purged = await app.client.post("/api/purge", params={"older_than_days": 3})
        check(document, "/api/purge", "post", purged, 200)
        assert purged.json() == answer_of(3, batches=1, requests=1)
        assert await counts(app.db) == dict.fromkeys(["batches", *(m.__tablename__ for m in OWNED)], 0)


def answer_of(days: int, batches: int, requests: int) -> dict[str, Any]:
    return {"older_than_days": days, "batches": batches, "requests": requests, "files": 0, "more": False}


async def test_the_scheduler_runs_the_purge(database_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(database_url)) as app:
        old = await seed(app.db)
        recent = await seed(app.db, ended_days_ago=RECENT)
        app.worker.wake(Step.PURGE)

        async def purged() -> bool:
            return await batch_ids(app.db) == {recent.batch_id}

        await wait_until(purged, timeout=20, what=f"batch {old.batch_id} purged by the PURGE step")


async def test_a_new_sqlite_database_gives_purged_space_back(tmp_path: Path) -> None:
    url = await migrate(sqlite_url(tmp_path))
    path = tmp_path / "batchgate.db"
    assert pragma(path, "auto_vacuum") == 2  # INCREMENTAL, set before the migrations' first table
    db = Database(url)
    try:
        for _ in range(3):
            await seed(db, deliveries=(D.DELIVERED,) * 50, body="x" * 4000)
        # The app's own engine sets it too, on a new file before any table exists.
        other = Database(sqlite_url(tmp_path, "other.db"))
        async with other.engine.begin() as fresh:
            await fresh.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        await other.dispose()
        assert pragma(tmp_path / "other.db", "auto_vacuum") == 2
        pages = pragma(path, "page_count")
        await drain(db, tmp_path)
        assert await batch_ids(db) == set()
        assert pragma(path, "freelist_count") == 0
        assert pragma(path, "page_count") < pages - 100  # 150 bodies of 4 KB gave their pages back
    finally:
        await db.dispose()


def pragma(path: Path, name: str) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute(f"PRAGMA {name}").fetchone()[0])


@pytest.mark.postgres
async def test_replicas_purge_side_by_side_and_skip_what_an_action_holds(tmp_path: Path) -> None:
    async with postgres_database() as url:
        await migrate(url)
        db, other = Database(url), Database(url)
        try:
            seeded = [await seed(db) for _ in range(6)]
            held = seeded[0]
            cutoff = utcnow() - timedelta(days=30)
            async with db.transaction() as session:
                # An operator's redelivery of one of its requests is in flight: it holds the batch.
                request, _ = await queries.request_and_delivery(session, held.request_ids[0], ADMIN)
                await request_actions.hold(session, request, held.request_ids[0])
                first, second = await asyncio.gather(
                    retention.purge_chunk(db, str(tmp_path), cutoff),
                    retention.purge_chunk(other, str(tmp_path), cutoff),
                )
                assert first.batches + second.batches == 5
                assert first.requests + second.requests == 5
            assert await batch_ids(db) == {held.batch_id}
            await drain(db, tmp_path)
            assert await batch_ids(db) == set()
        finally:
            await db.dispose()
            await other.dispose()


async def test_what_a_crash_left_under_data_dir_is_swept_once_old(
    database_url: str, start_app: StartApp
) -> None:
    """A spooled body, a partial upload and bytes whose row was never committed, left by a
    crash, go once a day old; fresh ones (maybe still being written) and stored files stay."""
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        root = Path(app.settings.data_dir)
        kept = await app.client.post(
            "/v1/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": "batch"}
        )
        stored = root / "files" / kept.json()["id"]
        (root / "tmp").mkdir(exist_ok=True)
        left = [root / "tmp" / "a.body", root / "files" / "file-b.part", root / "files" / "file-orphan"]
        fresh = [root / "tmp" / "c.body", root / "files" / "file-d.part"]
        day_old = (utcnow() - timedelta(days=1, minutes=1)).timestamp()
        for path in [*left, *fresh]:
            path.write_bytes(b"x")
        for path in [*left, stored]:
            os.utime(path, (day_old, day_old))
        await retention.step(app.db, str(root), app.settings.retention_days)  # what PURGE runs
        assert [p.exists() for p in left] == [False, False, False]
        assert [p.exists() for p in fresh] == [True, True] and stored.exists()


async def test_remote_openai_files_are_deleted_before_their_batch_is_purged(
    db: Database, openai_api: OpenAIBatchStandin, tmp_path: Path
) -> None:
    """A purge never drops the only record of a remote file (issue 25): the batch's OpenAI files
    are deleted first; while that fails, the batch is kept, naming them, for the next purge."""
    for file_id in ("file-in", "file-out"):
        openai_api.files[file_id] = b"{}\n"
        openai_api.file_objects[file_id] = {"id": file_id, "object": "file"}
    seeded = await seed(db, backend="openai", input_file_id="file-in", output_file_id="file-out")
    local = await seed(db)  # a batch without remote files is purged meanwhile
    remote = OpenAIBackend(openai_settings(db.url, openai_api, openai_max_retries=0))
    cutoff = utcnow() - timedelta(days=30)
    try:
        openai_api.fail_matching = {r"DELETE /v1/files/.+": [500]}  # OpenAI fails one delete
        purged = await retention.purge_chunk(db, str(tmp_path), cutoff, {"openai": remote})
        assert purged.batches == 1 and await batch_ids(db) == {seeded.batch_id}
        async with db.transaction() as session:
            kept = await session.get(Batch, seeded.batch_id)
            assert kept is not None and kept.files_deleted_at is None and kept.input_file_id == "file-in"

        purged = await retention.purge_chunk(db, str(tmp_path), cutoff, {"openai": remote})
        assert purged.batches == 1 and await batch_ids(db) == set()
        assert set(openai_api.deleted_files) == {"file-in", "file-out"}
        assert local.batch_id is not None
    finally:
        await remote.close()


async def test_old_operational_events_and_destination_events_are_purged(db: Database, tmp_path: Path) -> None:
    # Deliveries of no request and no batch (destination.paused, delivery.exhausted, ...) and a
    # destination's timeline: nothing owns them, so retention removes them on its own.
    old, recent = utcnow() - timedelta(days=OLD), utcnow() - timedelta(days=RECENT)
    async with db.transaction() as session:
        destination = Destination(key="http://a:80", created_at=old, updated_at=old)
        session.add(destination)
        await session.flush()
        session.add_all(
            [
                delivery_row(D.DELIVERED, old),  # gone
                delivery_row(D.DELIVERY_FAILED, old),  # gone
                delivery_row(D.RETRYING, old),  # still being sent: kept
                delivery_row(D.DELIVERED, recent),  # within the retention: kept
                DestinationEvent(destination_id=destination.id, to_state="open", at=old),  # gone
                DestinationEvent(destination_id=destination.id, to_state="closed", at=recent),  # kept
            ]
        )
    await drain(db, tmp_path)
    async with db.transaction() as session:
        left = (await session.execute(select(Delivery.status, Delivery.created_at))).all()
        events = (await session.scalars(select(DestinationEvent.to_state))).all()
    assert sorted(status for status, _ in left) == [D.DELIVERED, D.RETRYING]
    assert events == ["closed"]
