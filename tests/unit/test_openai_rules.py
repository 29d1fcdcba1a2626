"""The OpenAI backend's pure rules: line classification, limits and prices by model prefix,
token estimates, routes, and admission order (on both databases)."""

from __future__ import annotations

from typing import Any

import pytest
import tiktoken
from sqlalchemy import select

from app.core.rules import effective as overrides
from app.core.rules.effective import EffectiveSettings
from app.core.rules.routing import backend_for
from app.core.runs.openai import admission, tokens
from app.core.runs.openai import answers as openai_answers
from app.core.runs.openai import tables as model_tables
from app.db.models import Batch
from app.ground.clock import utcnow
from app.ground.config import Settings, parse_routes
from testkit import StartApp, fast_settings, request_payload


def line(status: int | None = None, error: dict[str, Any] | None = None, body: Any = None) -> dict[str, Any]:
    response = None if status is None else {"status_code": status, "request_id": "r", "body": body or {}}
    return {"id": "batch_req_1", "custom_id": "c", "response": response, "error": error}


def test_classify_goes_by_status_code_not_only_error() -> None:
    assert openai_answers.classify(line(200)) == ("ok", None)
    refused = {
        "error": {"message": "bad max_tokens", "type": "invalid_request_error", "code": "invalid_value"}
    }
    assert openai_answers.classify(line(400, body=refused)) == (
        "failed",
        {"code": "invalid_value", "message": "bad max_tokens"},
    )
    assert openai_answers.classify(line(500, body={"error": {"message": "boom", "type": "server_error"}}))[
        0
    ] == ("server_error")
    assert openai_answers.classify(line(error={"code": "batch_expired", "message": "late"})) == (
        "expired",
        None,
    )
    kind, error = openai_answers.classify(line(error={"code": "content_filter", "message": "no"}))
    assert kind == "failed" and error == {"code": "content_filter", "message": "no"}
    assert openai_answers.classify(line(429))[1] == {"code": "http_429", "message": "OpenAI answered 429"}


def test_limits_and_prices_go_by_longest_prefix_with_operator_overrides_first() -> None:
    settings = Settings(_env_file=None, openai_token_limits={"gpt-4o": 7, "gpt-4o-mini-2024": 9})  # type: ignore[call-arg]
    assert model_tables.token_limit("gpt-4o-mini-2024-07-18", settings) == (
        9,
        "operator limit for gpt-4o-mini-2024*",
    )
    assert model_tables.token_limit("gpt-4o-2024-08-06", settings) == (7, "operator limit for gpt-4o*")
    plain = Settings(_env_file=None)  # type: ignore[call-arg]
    assert model_tables.token_limit("gpt-4o-mini-2024-07-18", plain)[0] == 2_000_000
    assert model_tables.token_limit("gpt-4o", plain)[0] == 90_000
    assert model_tables.token_limit("my-finetune", plain) == (90_000, "fallback limit")

    cost = model_tables.cost("gpt-4o-mini-2024-07-18", plain, 1_000_000, 200_000, 1_000_000)
    assert cost is not None and cost.priced_as == "gpt-4o-mini"
    assert cost.synchronous == pytest.approx(0.8 * 0.15 + 0.2 * 0.075 + 0.60)
    assert cost.saving == pytest.approx(cost.synchronous / 2)
    assert model_tables.cost("my-finetune", plain, 10, 0, 10) is None
    priced = Settings(_env_file=None, openai_prices={"my-": {"input": 1, "output": 2}})  # type: ignore[call-arg]
    custom = model_tables.cost("my-finetune", priced, 1_000_000, 0, 1_000_000)
    assert custom is not None and custom.synchronous == pytest.approx(3.0)


def test_token_estimate_counts_with_tiktoken_and_falls_back_to_bytes() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "abcdefgh"}, {"role": "user", "content": "ij"}],
    }
    assert tokens.prompt_text(body) == ("abcdefgh\nij", 2)
    # 11 bytes / 4, rounded up, plus 4 tokens per message and 1
    assert tokens.estimate(body, None) == 3 + 2 * 4 + 1
    # A byte-level encoding stands in for a real one (no encoding file is downloaded in tests).
    byte_level = tiktoken.Encoding(
        "bytes", pat_str=r"[\s\S]", mergeable_ranks={bytes([i]): i for i in range(256)}, special_tokens={}
    )
    assert tokens.estimate(body, byte_level) == 11 + 2 * 4 + 1
    parts = {"model": "m", "input": [{"type": "input_text", "text": "hello"}], "instructions": "be brief"}
    assert tokens.prompt_text(parts)[0] == "hello\nbe brief"


def test_routes_are_checked_and_ordered() -> None:
    assert parse_routes("gpt-*=openai, *=local") == (("gpt-*", "openai"), ("*", "local"))
    with pytest.raises(ValueError, match="not a route"):
        parse_routes("gpt-*")
    settings = Settings(_env_file=None, backend_routes="o*=openai,*=local", default_backend="openai")  # type: ignore[call-arg]
    assert (backend_for(settings, "o3"), backend_for(settings, "llama3")) == ("openai", "local")


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
        assert await admission.admit(app.db, settings, "test", 4) == [other.id]
        async with app.db.transaction() as session:
            waiting = {b.id: b.wait_reason for b in (await session.scalars(select(Batch))).all()}
        assert "60 of 100 enqueued tokens of m" in (waiting[large.id] or "")
        assert waiting[small.id] == f"queued behind batch {large.id} (oldest first)"

        async with app.db.transaction() as session:
            done = await session.get(Batch, running.id)
            assert done is not None
            done.status = "done"  # the running batch finished (setup, not a transition under test)
        assert await admission.admit(app.db, settings, "test", 4) == [large.id, small.id]

        # A batch larger than the whole limit goes alone once nothing of its model is enqueued.
        async with app.db.transaction() as session:
            huge = batch("z", "ready", 10_000)
            session.add(huge)
        assert await admission.admit(app.db, settings, "test", 4) == [huge.id]


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
        admitted = await admission.admit(app.db, settings, "test", 4)
        assert admitted == [batch.id for batch in ready[:4]]
        async with app.db.transaction() as session:
            statuses = {b.id: (b.status, b.leased_by) for b in (await session.scalars(select(Batch))).all()}
        assert [statuses[batch.id] for batch in ready[4:]] == [("ready", None), ("ready", None)]
        assert await admission.admit(app.db, settings, "test", 4) == [batch.id for batch in ready[4:]]
