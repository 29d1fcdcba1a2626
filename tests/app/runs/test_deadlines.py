"""Deadlines (issue 27): a request's complete_by closes its batch early, moves it to a fallback
backend that can make it (or refuses it at intake), and ends it failed with deadline_exceeded
when it is not finished in time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app.core import deadlines
from app.db.session import Database
from app.ground.clock import utcnow
from testkit import StartApp, fast_settings, request_payload, webhook
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver


def due_in(seconds: float) -> str:
    return (utcnow() + timedelta(seconds=seconds)).isoformat()


def deadline_file(tmp_path: Path, server: str) -> str:
    path = tmp_path / "backends.toml"
    path.write_text(
        f"""
[backends.openai]
kind = "openai-batch"
api_key_env = "TEST_DEADLINE_OPENAI_KEY"
base_url = "http://127.0.0.1:9/v1"
models = ["gpt-*"]
fallback = ["fast"]

[backends.slow-only]
kind = "openai-batch"
api_key_env = "TEST_DEADLINE_OPENAI_KEY"
base_url = "http://127.0.0.1:9/v1"
models = ["o1*"]

[backends.fast]
kind = "openai-compatible"
base_url = "{server}/v1"
models = ["gpt-*", "stand-in"]
batch_max_age_seconds = 60
"""
    )
    return str(path)


@pytest.fixture
def deadline_settings(
    database_url: str, inference: InferenceStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("TEST_DEADLINE_OPENAI_KEY", "sk-test")
    return fast_settings(database_url, backends_file=deadline_file(tmp_path, inference.url))  # type: ignore[attr-defined]


async def test_a_deadline_a_batch_api_cannot_make_goes_to_its_fallback_or_is_refused(
    deadline_settings: Any, start_app: StartApp
) -> None:
    async with start_app(deadline_settings.model_copy(update={"scheduler_enabled": False})) as app:

        async def post(custom_id: str, model: str, **extra: Any) -> Any:
            body = {**request_payload(custom_id, {"type": "none"}, model=model), **extra}
            return await app.client.post("/api/requests", json=body)

        # Without a deadline, and with one a day and more away, gpt-* runs on the batch API.
        assert (await post("no-deadline", "gpt-4o")).status_code == 202
        assert (await post("far", "gpt-4o", complete_by=due_in(25 * 3600))).status_code == 202
        # Two hours: the batch API's 24 h window cannot make it; its fallback `fast` can.
        assert (await post("soon", "gpt-4o", complete_by=due_in(7200))).status_code == 202
        backends = {
            c: (await app.client.get(f"/api/requests/{c}")).json()["backend"]
            for c in ("no-deadline", "far", "soon")
        }
        assert backends == {"no-deadline": "openai", "far": "openai", "soon": "fast"}

        # No fallback serves o1: refused, saying why; a passed deadline is refused everywhere.
        for custom_id, model, when in (
            ("o1-soon", "o1-mini", due_in(7200)),
            ("past", "stand-in", due_in(-5)),
        ):
            answer = await post(custom_id, model, complete_by=when)
            assert answer.status_code == 422, answer.text
            error = answer.json()["errors"][0]
            assert error["code"] == "deadline_unreachable" and error["source"]["pointer"] == "/complete_by"
        # A request that names its batch API gets that one or a refusal, never another backend.
        answer = await post("named", "gpt-4o", complete_by=due_in(7200), backend="openai")
        assert answer.status_code == 422 and answer.json()["errors"][0]["code"] == "deadline_unreachable"
        # The bulk path places each item by the same rule and stores its deadline.
        items = [
            {
                **request_payload("bulk-far", {"type": "none"}, model="gpt-4o"),
                "complete_by": due_in(25 * 3600),
            },
            {**request_payload("bulk-soon", {"type": "none"}, model="gpt-4o"), "complete_by": due_in(7200)},
        ]
        assert (await app.client.post("/api/requests/bulk", json=items)).json()["accepted"] == 2
        stored = {c: (await app.client.get(f"/api/requests/{c}")).json() for c in ("bulk-far", "bulk-soon")}
        assert {c: r["backend"] for c, r in stored.items()} == {"bulk-far": "openai", "bulk-soon": "fast"}
        assert all(r["complete_by"] for r in stored.values())
        # Not a time with a zone: a clear 422 of its own.
        answer = await post("naive", "stand-in", complete_by="2030-01-01T00:00:00")
        assert answer.status_code == 422 and answer.json()["errors"][0]["code"] == "invalid_complete_by"


async def test_a_near_deadline_closes_the_batch_at_once(
    deadline_settings: Any, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    async with start_app(deadline_settings) as app:
        hook = webhook(receiver.url + "/hook")  # type: ignore[attr-defined]
        # `fast` gathers a batch for 60 s; this request is due in 30 s, so its batch closes now.
        body = {**request_payload("due-30", hook), "complete_by": due_in(30)}
        assert (await app.client.post("/api/requests", json=body)).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes("due-30")) == 1, timeout=15)
        assert receiver.successes("due-30")[0].json["response"]["status_code"] == 200
        detail = (await app.client.get("/api/requests/due-30")).json()
        batch = (await app.client.get(f"/api/batches/{detail['batch_id']}")).json()
        assert any("complete_by" in (event["reason"] or "") for event in batch["events"]), batch["events"]


async def test_a_request_not_finished_by_its_deadline_fails_and_is_delivered(
    deadline_settings: Any, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    inference.delay_for["late"] = 8  # the server answers long after the deadline
    async with start_app(deadline_settings) as app:
        hook = webhook(receiver.url + "/hook")  # type: ignore[attr-defined]
        body = {**request_payload("late", hook), "complete_by": due_in(2)}
        assert (await app.client.post("/api/requests", json=body)).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes("late")) == 1, timeout=15)
        delivered = receiver.successes("late")[0].json
        assert delivered["response"] is None and delivered["error"]["code"] == "deadline_exceeded"
        stored = (await app.client.get("/api/requests/late")).json()
        assert stored["status"] == "failed" and stored["result"]["error"]["code"] == "deadline_exceeded"
        assert stored["complete_by"] is not None


async def test_the_sweep_reads_only_unfinished_requests_with_a_deadline(db: Database) -> None:
    """The sweep runs every tick: it goes through the partial ix_requests_complete_by, not the
    status index that holds every unfinished request (SQLite, without statistics, took that)."""
    sweep = deadlines._overdue(utcnow(), deadlines.CHUNK)
    async with db.engine.connect() as conn:
        sql = str(sweep.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if db.is_postgres:
            await conn.exec_driver_sql("SET enable_seqscan = off")  # a small table is read whole
            plan = " ".join(row[0] for row in await conn.exec_driver_sql("EXPLAIN " + sql))
        else:
            plan = " ".join(row[-1] for row in await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "ix_requests_complete_by" in plan, plan
    assert "ix_requests_status_id" not in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan
    async with db.transaction() as session:  # and it runs
        assert (await session.execute(sweep)).all() == []
