"""Anthropic takes at most 100,000 requests or 256 MB per batch. The batcher's limits are
Batchgate's own (BATCH_MAX_REQUESTS, BATCH_MAX_BYTES) and may be set higher, so the runner cuts a
batch at submission: a native batch sends what fits and hands the rest back to batching (a new
batch); a drop-in batch, whose membership is fixed, fails whole with the reason. The limits are
lowered here to keep the test small."""

from __future__ import annotations

import pytest

from app.core.runs.anthropic import endings
from app.db.session import Database
from app.ground.statuses import BatchStatus, RequestStatus
from testkit.anthropic_batch import batch_row, ready_batch, requests_of, run_until, runner, timeline
from testkit.standins.anthropic_batch import AnthropicBatchStandin


async def test_a_native_batch_over_the_limit_sends_what_fits_and_the_rest_goes_back(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endings, "MAX_REQUESTS", 2)
    batch_id = await ready_batch(db, "r1", "r2", "r3")
    async with runner(db, database_url, anthropic_api) as run:
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.DONE and batch.request_count == 2
    [sent] = [r.requests for r in anthropic_api._runs.values()]
    assert len(sent) == 2
    got = await requests_of(db)
    assert {cid: r.status for cid, r in got.items()} == {
        "r1": RequestStatus.SUCCEEDED,
        "r2": RequestStatus.SUCCEEDED,
        "r3": RequestStatus.PENDING,
    }
    assert got["r3"].batch_id is None
    assert "1 requests beyond Anthropic's limits go to a new batch" in await timeline(db, batch_id)


async def test_a_dropin_batch_over_the_limit_fails_whole(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endings, "MAX_BYTES", 300)
    batch_id = await ready_batch(db, "d1", "d2" * 200, scope="batch:1")
    async with runner(db, database_url, anthropic_api) as run:
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.FAILED and not anthropic_api.batches
    assert batch.error is not None and batch.error["code"] == "batch_too_large"
    assert {r.status for r in (await requests_of(db, batch_id)).values()} == {RequestStatus.FAILED}
    assert (await batch_row(db, batch_id)).leased_by is None
