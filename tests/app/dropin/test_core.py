"""Drop-in batches in the core, on SQLite and PostgreSQL: a validated file becomes one batch of
its own (fixed membership, custom_ids scoped to it), runs on the local backend, and ends with
its output and error files written. (Validation is tested through the face, in
test_openai_sdk.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from app.core.dropin import create, file_store
from app.core.rules.owners import ADMIN
from app.db.models import Batch, File, Request
from app.ground.clock import utcnow
from testkit import RunningApp, StartApp, fast_settings, request_payload, wait_until
from testkit.standins.inference import InferenceStandin

ENDPOINT = "/v1/chat/completions"


def line(custom_id: str, **body: Any) -> bytes:
    payload = request_payload(custom_id, {}, **body)
    record = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": payload["body"]}
    return json.dumps(record).encode() + b"\n"


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def upload(app: RunningApp, *lines: bytes) -> file_store.File:
    return await file_store.store(
        app.db, app.settings.data_dir, chunks(*lines), filename="in.jsonl", purpose="batch", max_bytes=10**6
    )


async def ended_with_files(app: RunningApp, batch_id: int) -> Batch:
    async def written() -> bool:
        async with app.db.transaction() as session:
            batch = await session.get(Batch, batch_id)
            return batch is not None and batch.files_written_at is not None

    await wait_until(written, timeout=30, what=f"batch {batch_id} ended with its files written")
    async with app.db.transaction() as session:
        batch = await session.get(Batch, batch_id)
        assert batch is not None
        return batch


async def read_lines(app: RunningApp, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    file = await file_store.get(app.db, file_id, ADMIN)
    data = b"".join([chunk async for chunk in file_store.content(app.settings.data_dir, file)])
    return [json.loads(raw) for raw in data.splitlines()]


async def test_a_file_runs_as_one_batch_of_its_own_and_ends_with_its_files(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    inference.status_for["bad"] = 400
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        # A native request for the same model and the same custom_id: it must not join the batch.
        assert (await app.submit("a", None)).status_code == 202
        file = await upload(app, line("a"), line("b"), line("bad", user="bad"))
        batch = await create.from_file(app.db, app.settings, file, ENDPOINT, {"k": "v"})
        assert (batch.status, batch.request_count, batch.origin) == ("ready", 3, "openai_batch")

        ended = await ended_with_files(app, batch.id)
        assert (ended.status, ended.completed_count, ended.failed_count) == ("done", 2, 1)
        output = await read_lines(app, ended.dropin_output_file_id)
        errors = await read_lines(app, ended.dropin_error_file_id)
        assert sorted(o["custom_id"] for o in output) == ["a", "b"]
        assert all(o["response"]["status_code"] == 200 and o["id"].startswith("batch_req_") for o in output)
        assert [e["custom_id"] for e in errors] == ["bad"]
        assert errors[0]["response"]["status_code"] == 400
        async with app.db.transaction() as session:
            scopes = dict((await session.execute(select(Request.scope, Request.batch_id))).all())
        assert scopes[""] != batch.id and scopes[f"batch:{batch.id}"] == batch.id


async def test_a_batch_unfinished_when_its_window_closes_expires_keeping_finished_lines(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1", local_concurrency=1)) as app:
        file = await upload(app, line("quick"), line("slow", user="slow"), line("never"))
        inference.delay_for["slow"] = 60.0  # holds the only slot: "never" never starts
        batch = await create.from_file(app.db, app.settings, file, ENDPOINT, None)

        async def quick_done() -> bool:
            async with app.db.transaction() as session:
                status = await session.scalar(
                    select(Request.status).where(Request.batch_id == batch.id, Request.custom_id == "quick")
                )
            return status == "succeeded"

        await wait_until(quick_done, timeout=30, what="the first line done")
        async with app.db.transaction() as session:
            await session.execute(update(Batch).where(Batch.id == batch.id).values(expires_at=utcnow()))

        ended = await ended_with_files(app, batch.id)
        assert ended.status == "expired"
        assert [o["custom_id"] for o in await read_lines(app, ended.dropin_output_file_id)] == ["quick"]
        errors = await read_lines(app, ended.dropin_error_file_id)
        assert sorted(e["custom_id"] for e in errors) == ["never", "slow"]
        assert {e["error"]["code"] for e in errors} == {"batch_expired"}


async def test_files_are_deleted_with_their_bytes_once_they_expire(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url)) as app:
        kept = await upload(app, line("a"))
        gone = await file_store.store(
            app.db,
            app.settings.data_dir,
            chunks(line("b")),
            filename="old.jsonl",
            purpose="batch",
            max_bytes=10**6,
            expires_at=utcnow() - timedelta(seconds=1),
        )
        path = file_store.location(app.settings.data_dir, gone)
        assert path.exists()

        async def deleted() -> bool:
            async with app.db.transaction() as session:
                return await session.get(File, gone.id) is None

        await wait_until(deleted, timeout=10, what="the expired file deleted")
        assert not path.exists()
        assert (await file_store.get(app.db, kept.id, ADMIN)).bytes == len(line("a"))
