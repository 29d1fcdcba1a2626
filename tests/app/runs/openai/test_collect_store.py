"""Storing a chunk of an OpenAI batch's output lines (collect.apply), on SQLite and PostgreSQL:
each line's request ends with its result, its deliveries queued and the batch's counts and
usage added, in one transaction; a 2xx line's response is stored as the text it came in."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, text

from app.core.rules.effective import EffectiveSettings
from app.core.runs.openai import collect
from app.core.runs.openai.common import Run
from app.core.runs.openai.outcomes import parse
from app.db.models import Batch, Delivery, Request
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.statuses import RequestStatus as R
from testkit.apps import fast_settings
from testkit.builders import new_batch

REQUEST = {
    "scope": "",
    "origin": "api",
    "backend": "openai",
    "endpoint": "/v1/chat/completions",
    "model": "gpt-4o-mini",
    "body_bytes": 10,
}
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def output_line(custom_id: str, status: int, body: dict[str, Any]) -> str:
    """A line as OpenAI writes it (json.dumps' spacing, which the gateway would not write)."""
    response = {"status_code": status, "request_id": f"req_{custom_id}", "body": body}
    return json.dumps(
        {"id": f"batch_req_{custom_id}", "custom_id": custom_id, "response": response, "error": None}
    )


async def processing_batch(db: Database, *custom_ids: str) -> tuple[int, dict[str, int]]:
    now = utcnow()
    async with db.transaction() as session:
        batch = new_batch(backend="openai", status="collecting", request_count=len(custom_ids))
        session.add(batch)
        await session.flush()
        webhook = {"type": "webhook", "webhook_url": "http://127.0.0.1:9/hook"}
        requests = {
            custom_id: Request(
                **REQUEST,
                custom_id=custom_id,
                body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": custom_id}]},
                delivery=webhook,
                status=R.PROCESSING,
                batch_id=batch.id,
                created_at=now,
            )
            for custom_id in custom_ids
        }
        session.add_all(requests.values())
        await session.flush()
        return batch.id, {custom_id: request.id for custom_id, request in requests.items()}


async def test_a_chunk_is_stored_with_its_deliveries_counts_and_usage(
    db: Database, database_url: str
) -> None:
    batch_id, ids = await processing_batch(db, "ok", "refused")
    answered = output_line("ok", 200, {"choices": [{"message": {"content": "hé ☃"}}], "usage": USAGE})
    refused = output_line("refused", 400, {"error": {"message": "bad max_tokens", "code": "invalid_value"}})
    run = Run(db, EffectiveSettings(db, fast_settings(database_url)), backend=None, owner="w")  # type: ignore[arg-type]
    collected = collect.Collected(open_ids={custom_id: [i] for custom_id, i in ids.items()})

    await collect.apply(run, batch_id, parse([answered, refused]), collected)

    assert collected.stored == 2 and collected.ids == set(ids.values())
    async with db.transaction() as session:
        rows = {r.custom_id: r for r in (await session.scalars(select(Request))).all()}
        batch = await session.get(Batch, batch_id)
        queued = (await session.scalars(select(Delivery.request_id))).all()
        stored_text = await session.scalar(
            text("SELECT response FROM requests WHERE id = :id"), {"id": ids["ok"]}
        )
    ok, failed = rows["ok"], rows["refused"]
    assert ok.status == R.SUCCEEDED and ok.error is None
    assert ok.response == json.loads(answered)["response"]
    assert (ok.prompt_tokens, ok.completion_tokens, ok.total_tokens, ok.inference_attempts) == (7, 3, 10, 1)
    assert ok.completed_at is not None
    if db.engine.dialect.name == "sqlite":  # PostgreSQL's jsonb keeps the value, not the text
        assert stored_text == json.dumps(json.loads(answered)["response"])
    assert failed.status == R.FAILED
    assert failed.error == {"code": "invalid_value", "message": "bad max_tokens"}
    assert failed.response == json.loads(refused)["response"]
    assert sorted(queued) == sorted(ids.values())
    assert batch is not None
    assert (batch.completed_count, batch.failed_count, batch.input_tokens, batch.output_tokens) == (
        1,
        1,
        7,
        3,
    )
