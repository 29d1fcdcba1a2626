"""Anthropic Messages lines on the local backend: the translation both ways, and one real run."""

from __future__ import annotations

from typing import Any

import pytest

from app.backends.anthropic_messages import UnsupportedContent, error_body, to_chat, to_message
from app.backends.base import BatchLine
from app.backends.local import LocalBackend
from tests.standins.inference import InferenceStandin
from tests.support import fast_settings


def _chat(text: str = "hi", finish_reason: str = "stop", **choice: Any) -> dict[str, Any]:
    """A chat.completion answer as an OpenAI-compatible server gives it."""
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "model": "llama3",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                **choice,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def test_system_string_becomes_a_leading_system_message() -> None:
    chat = to_chat(
        {
            "model": "m",
            "max_tokens": 10,
            "system": "be brief",
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_system_and_message_text_blocks_are_joined() -> None:
    text = [{"type": "text", "text": "one"}, {"type": "text", "text": "two", "cache_control": {}}]
    chat = to_chat(
        {
            "model": "m",
            "max_tokens": 10,
            "system": text,
            "messages": [
                {"role": "user", "content": text},
                {"role": "assistant", "content": "ok"},
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "one\n\ntwo"},
        {"role": "user", "content": "one\n\ntwo"},
        {"role": "assistant", "content": "ok"},
    ]


def test_params_are_renamed_and_unknown_keys_dropped() -> None:
    chat = to_chat(
        {
            "model": "m",
            "max_tokens": 64,
            "messages": [],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        }
    )
    assert chat == {
        "model": "m",
        "messages": [],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["END"],
        "user": "u-1",
    }


def test_an_image_block_is_refused_by_name() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
    params = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [image]}]}
    with pytest.raises(UnsupportedContent, match="'image'"):
        to_chat(params)


@pytest.mark.parametrize(
    ("finish_reason", "choice", "stop_reason", "stop_sequence"),
    [
        ("stop", {}, "end_turn", None),
        ("length", {}, "max_tokens", None),
        ("stop", {"stop_reason": "END"}, "stop_sequence", "END"),  # vLLM names the stop string
        ("stop", {"stop_reason": 128009}, "end_turn", None),  # ...and a stop token by its id
    ],
)
def test_stop_reasons(
    finish_reason: str, choice: dict[str, Any], stop_reason: str, stop_sequence: str | None
) -> None:
    message = to_message(_chat(finish_reason=finish_reason, **choice), "m")
    assert (message["stop_reason"], message["stop_sequence"]) == (stop_reason, stop_sequence)


def test_message_carries_text_id_model_and_usage() -> None:
    message = to_message(_chat("hello"), "claude-local")
    assert message["id"] == "msg_abc123"
    assert (message["type"], message["role"], message["model"]) == ("message", "assistant", "claude-local")
    assert message["content"] == [{"type": "text", "text": "hello", "citations": None}]
    usage = message["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (12, 3)
    assert (usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]) == (0, 0)


def test_message_validates_against_the_sdk_with_every_field_present() -> None:
    types = pytest.importorskip("anthropic.types")
    message = to_message(_chat("hello"), "claude-local")
    assert set(types.Message.model_fields) <= set(message)
    assert set(types.Usage.model_fields) <= set(message["usage"])
    assert set(types.TextBlock.model_fields) <= set(message["content"][0])
    parsed = types.Message.model_validate(message)
    assert parsed.content[0].text == "hello" and parsed.usage.output_tokens == 3


def test_error_body_has_anthropics_shape() -> None:
    assert error_body(429, "slow down") == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert error_body(502, "down")["error"]["type"] == "api_error"
    assert error_body(400, "no", "invalid_request_error")["error"]["type"] == "invalid_request_error"


async def test_local_backend_answers_a_messages_line_with_a_message(inference: InferenceStandin) -> None:
    backend = LocalBackend(fast_settings("sqlite+aiosqlite://", inference.url + "/v1"))
    params = {
        "model": "claude-local",
        "max_tokens": 32,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "ping"}]}],
    }
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    refused = {**params, "messages": [{"role": "user", "content": [image]}]}
    inference.status_for["bad"] = 400  # the stand-in keys on `user`, i.e. metadata.user_id
    erroring = {**params, "metadata": {"user_id": "bad"}}
    try:
        result = await backend.run_line(BatchLine(1, "c1", "/v1/messages", params))
        failed = await backend.run_line(BatchLine(2, "c2", "/v1/messages", refused))
        errored = await backend.run_line(BatchLine(3, "c3", "/v1/messages", erroring))
    finally:
        await backend.close()

    assert result.succeeded and result.response is not None
    assert result.response["status_code"] == 200
    message = result.response["body"]
    assert message["type"] == "message" and message["model"] == "claude-local"
    assert message["content"] == [{"type": "text", "text": "echo: ping", "citations": None}]
    assert message["stop_reason"] == "end_turn" and message["usage"]["output_tokens"] == 2
    call, _ = inference.calls  # the refused line never reached the server
    assert call["path"] == "/v1/chat/completions"
    assert call["body"]["messages"][0] == {"role": "system", "content": "be brief"}

    assert failed.response is None and failed.error is not None
    assert failed.error["code"] == "invalid_request" and "'image'" in failed.error["message"]
    assert failed.attempts == 0

    # A server's error answer stays as it came (its OpenAI-shaped body), as for any other line.
    assert errored.error is not None and errored.error["code"] == "http_400"
    assert errored.response is not None and errored.response["status_code"] == 400
    assert errored.response["body"]["error"]["message"] == "stand-in status 400"
