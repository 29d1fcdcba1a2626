"""OpenAI admission and routing, against the stand-in Batch API on SQLite and PostgreSQL: token
tables editable as JSON, batches admitted oldest first per model within the token capacity and at
most four uploads a round, requests routed by model pattern or their own backend, and refused for
OpenAI without a key."""

from __future__ import annotations

from sqlalchemy import select

from app.core.rules import effective as overrides
from app.core.rules.effective import EffectiveSettings
from app.core.runs.openai import admission
from app.core.runs.openai import tables as model_tables
from app.db.models import Batch, Request
from app.ground.clock import utcnow
from testkit import StartApp, fast_settings, request_payload, wait_until
from testkit.openai import (
    MODEL,
    batches,
    finished,
    openai_settings,
    submit,
)
from testkit.standins.openai_batch import OpenAIBatchStandin
from testkit.standins.receiver import WebhookReceiver


async def test_token_tables_are_editable_as_json(database_url: str, start_app: StartApp) -> None:
    settings = fast_settings(database_url, scheduler_enabled=False)
    async with start_app(settings) as app:
        saved = await overrides.save(
            app.db,
            settings,
            {
                "openai_token_limits": '{"gpt-4o": 1350000}',
                "openai_prices": '{"x": {"input": 1, "output": 2}}',
            },
        )
        assert saved["openai_token_limits"] == {"gpt-4o": 1350000}
        effective = await EffectiveSettings(app.db, settings).refresh()
        assert model_tables.token_limit("gpt-4o", effective)[0] == 1_350_000
        assert effective.openai_prices["x"].output == 2
        answer = await app.client.post("/settings", data={"openai_token_limits": '{"gpt-4o": 0}'})
        assert answer.status_code == 422 and "at least 1" in answer.text
        answer = await app.client.post("/settings", data={"openai_prices": "{not json"})
        assert answer.status_code == 422 and "not JSON" in answer.text
        page = (await app.client.get("/settings")).text
        assert "1350000" in page and "<textarea" in page


async def test_admission_is_oldest_first_per_model_and_never_starves_a_large_batch(
    database_url: str, start_app: StartApp
) -> None:
    settings = fast_settings(
        database_url, scheduler_enabled=False, openai_token_limits={"m": 100}, openai_token_limit_fallback=100
    )
    async with start_app(settings) as app:
        now = utcnow()

        def batch(model: str, status: str, tokens_: int) -> Batch:
            return Batch(
                backend="openai", endpoint="/v1/chat/completions", model=model, status=status,
                estimated_tokens=tokens_, created_at=now, status_changed_at=now,
            )  # fmt: skip

        async with app.db.transaction() as session:
            running = batch("m", "processing", 60)
            large, small, other = batch("m", "ready", 50), batch("m", "ready", 10), batch("n", "ready", 30)
            session.add_all([running, large, small, other])
        assert await admission.admit(app.db, settings, "test", 4, "openai") == [other.id]
        async with app.db.transaction() as session:
            waiting = {b.id: b.wait_reason for b in (await session.scalars(select(Batch))).all()}
        assert "60 of 100 enqueued tokens of m" in (waiting[large.id] or "")
        assert waiting[small.id] == f"queued behind batch {large.id} (oldest first)"

        async with app.db.transaction() as session:
            done = await session.get(Batch, running.id)
            assert done is not None
            done.status = "done"  # the running batch finished (setup, not a transition under test)
        assert await admission.admit(app.db, settings, "test", 4, "openai") == [large.id, small.id]

        # A batch larger than the whole limit goes alone once nothing of its model is enqueued.
        async with app.db.transaction() as session:
            huge = batch("z", "ready", 10_000)
            session.add(huge)
        assert await admission.admit(app.db, settings, "test", 4, "openai") == [huge.id]


async def test_requests_for_openai_without_a_key_are_refused(database_url: str, start_app: StartApp) -> None:
    settings = fast_settings(database_url, scheduler_enabled=False, backend_routes="gpt-*=openai")
    async with start_app(settings) as app:
        payload = request_payload("nokey/1", {"type": "none"}, model="gpt-4o")
        answer = await app.client.post("/api/requests", json=payload)
        assert answer.status_code == 422
        assert answer.json()["errors"][0]["code"] == "openai_not_configured"
        payload["backend"] = "local"
        assert (await app.client.post("/api/requests", json=payload)).status_code == 202


async def test_one_admission_round_starts_at_most_four_uploads(
    database_url: str, start_app: StartApp
) -> None:
    # The token limit (1,000) is far above the batches' needs: only the batch count may hold them.
    settings = fast_settings(database_url, scheduler_enabled=False, openai_token_limits={"m": 1000})
    async with start_app(settings) as app:
        now = utcnow()
        async with app.db.transaction() as session:
            ready = [
                Batch(
                    backend="openai", endpoint="/v1/chat/completions", model="m", status="ready",
                    estimated_tokens=10, created_at=now, status_changed_at=now,
                )
                for _ in range(6)
            ]  # fmt: skip
            session.add_all(ready)
        admitted = await admission.admit(app.db, settings, "test", 4, "openai")
        assert admitted == [batch.id for batch in ready[:4]]
        async with app.db.transaction() as session:
            statuses = {b.id: (b.status, b.leased_by) for b in (await session.scalars(select(Batch))).all()}
        assert [statuses[batch.id] for batch in ready[4:]] == [("ready", None), ("ready", None)]
        assert await admission.admit(app.db, settings, "test", 4, "openai") == [
            batch.id for batch in ready[4:]
        ]


async def test_a_batch_waits_for_token_capacity_oldest_first(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000  # the first batch stays enqueued until released
    settings = openai_settings(
        database_url, openai_api, batch_max_requests=2, openai_token_limits={"gpt-4o": 5, MODEL: 20}
    )
    async with start_app(settings) as app:
        await submit(app, receiver, "q/1", "q/2", "q/3", "q/4")

        async def second_waits() -> bool:
            listed = await batches(app)
            return len(listed) >= 2 and "waiting for capacity" in (listed[1]["wait_reason"] or "")

        await wait_until(second_waits, timeout=10, what="the second batch waits for capacity")
        first, second = (await batches(app))[:2]
        assert first["status"] == "processing" and second["status"] == "ready"
        assert f"operator limit for {MODEL}*" in second["wait_reason"]
        assert "waiting for capacity" in (await app.client.get(f"/batches/{second['id']}")).text
        assert len(openai_api.created) == 1

        openai_api.polls_per_status = 0
        details = await finished(app, "q/1", "q/2", "q/3", "q/4")
        assert {d["status"] for d in details.values()} == {"succeeded"}
        assert len(openai_api.created) == 2


async def test_routing_by_model_pattern_and_per_request_backend(
    database_url: str, openai_api: OpenAIBatchStandin, start_app: StartApp
) -> None:
    settings = openai_settings(
        database_url,
        openai_api,
        default_backend="local",
        backend_routes="gpt-*=openai,o*=openai,*=local",
        scheduler_enabled=False,
    )
    async with start_app(settings) as app:
        for custom_id, model, backend in (
            ("rt/gpt", "gpt-4o", None),
            ("rt/o3", "o3-mini", None),
            ("rt/llama", "llama3", None),
            ("rt/forced", "gpt-4o", "local"),
        ):
            payload = request_payload(custom_id, {"type": "none"}, model=model)
            if backend:
                payload["backend"] = backend
            assert (await app.client.post("/api/requests", json=payload)).status_code == 202
        bad = request_payload("rt/bad", {"type": "none"})
        bad["backend"] = "mainframe"
        answer = await app.client.post("/api/requests", json=bad)
        assert answer.status_code == 422 and answer.json()["errors"][0]["code"] == "invalid_backend"
        async with app.db.transaction() as session:
            rows = dict((await session.execute(select(Request.custom_id, Request.backend))).all())
        assert rows == {"rt/gpt": "openai", "rt/o3": "openai", "rt/llama": "local", "rt/forced": "local"}
