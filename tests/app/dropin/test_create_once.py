"""An OpenAI-face batch create reads its input file once (issue 30), on SQLite and PostgreSQL:
its lines are validated and stored in the same pass, a problem past the first chunks rolls back
what was stored and fails the batch with every problem listed, and a team's limits refuse it on
the size its upload recorded, before its file is read at all."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from app.core import owner_limits
from app.core.dropin import create, file_store
from app.core.rules.errors import TooMany
from app.core.rules.owners import Caller
from app.db.models import Batch, File, Request
from testkit import RunningApp, StartApp, fast_settings

from .test_core import ENDPOINT, line, upload

# Past two of create's chunks: the last lines are read while the first are being stored.
LINES = create.INSERT_CHUNK * 2 + 345


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the files whose lines were read, once per pass over one."""
    seen: list[str] = []
    real = file_store.lines

    def counted(data_dir: str, file: File) -> Iterator[bytes]:
        seen.append(file.id)
        return real(data_dir, file)

    monkeypatch.setattr(file_store, "lines", counted)
    return seen


async def stored(app: RunningApp, batch_id: int) -> list[Request]:
    async with app.db.transaction() as session:
        query = select(Request).where(Request.batch_id == batch_id).order_by(Request.id)
        return list(await session.scalars(query))


async def test_a_file_is_read_once_and_every_line_stored_as_it_was_sent(
    database_url: str, start_app: StartApp, reads: list[str]
) -> None:
    lines = [line(f"r{i}", user=f"u{i}") for i in range(LINES)]
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        file = await upload(app, *lines)
        batch = await create.from_file(app.db, app.settings, file, ENDPOINT, None)
        assert reads == [file.id]
        assert (batch.status, batch.request_count, batch.bytes) == ("ready", LINES, sum(map(len, lines)))
        rows = await stored(app, batch.id)
    assert [r.custom_id for r in rows] == [f"r{i}" for i in range(LINES)]
    sent = [json.loads(raw) for raw in lines]
    assert [r.body for r in rows] == [s["body"] for s in sent]
    assert [r.body_bytes for r in rows] == [len(raw) for raw in lines]
    assert {(r.status, r.scope, r.endpoint, r.model, r.backend, r.origin) for r in rows} == {
        ("batched", f"batch:{batch.id}", ENDPOINT, batch.model, batch.backend, "openai_batch")
    }
    assert {(r.delivery == {"type": "none"}, r.created_at == batch.created_at, r.owner) for r in rows} == {
        (True, True, "")
    }


async def test_a_problem_past_the_first_chunks_fails_the_batch_and_stores_none_of_its_lines(
    database_url: str, start_app: StartApp, reads: list[str]
) -> None:
    lines = [line(f"r{i}") for i in range(LINES)]
    lines[LINES - 300] = line("r5")  # a duplicate, read while the first chunks are being stored
    lines[LINES - 2] = b'{"method": "POST"}\n'
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        file = await upload(app, *lines)
        batch = await create.from_file(app.db, app.settings, file, ENDPOINT, None)
        assert reads == [file.id]
        assert (batch.status, batch.request_count, batch.bytes) == ("failed", 0, sum(map(len, lines)))
        assert batch.error is not None
        assert [(e["line"], e["code"]) for e in batch.error["data"]] == [
            (LINES - 299, "duplicate_custom_id"),
            (LINES - 1, "missing_required_parameter"),
        ]
        assert await stored(app, batch.id) == []
        async with app.db.transaction() as session:
            assert await session.scalar(select(func.count()).select_from(Request)) == 0
            assert await session.scalar(select(func.count()).select_from(Batch)) == 1


async def test_a_team_past_its_limit_is_refused_before_its_file_is_read(
    database_url: str, start_app: StartApp, reads: list[str]
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        await owner_limits.set_limits(app.db, "red", 10, None)
        file = await upload(app, line("a"), line("b"))
        assert file.bytes > 40  # about 10 tokens of 4 bytes: more than the limit
        with pytest.raises(TooMany):
            await create.from_file(app.db, app.settings, file, ENDPOINT, None, caller=Caller("red"))
        assert reads == []
        async with app.db.transaction() as session:
            assert await session.scalar(select(func.count()).select_from(Batch)) == 0
        # Within its limit, the same team's batch is made.
        await owner_limits.set_limits(app.db, "red", 10_000, None)
        batch = await create.from_file(app.db, app.settings, file, ENDPOINT, None, caller=Caller("red"))
        assert (batch.status, batch.request_count, batch.owner) == ("ready", 2, "red")
