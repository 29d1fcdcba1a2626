"""The OpenAI backend's pure rules: line classification, limits and prices by model prefix,
token estimates and routes."""

from __future__ import annotations

from typing import Any

import pytest
import tiktoken

from app.core.rules.routing import backend_for
from app.core.runs.openai import answers as openai_answers
from app.core.runs.openai import tables as model_tables
from app.core.runs.openai import tokens
from app.ground.config import Settings, parse_routes


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
