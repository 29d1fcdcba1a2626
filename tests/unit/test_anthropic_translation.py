"""Anthropic Messages lines and the chat format, translated both ways: system, text blocks, params,
tools and tool results, stop reasons and the error shape (app.formats.anthropic_messages)."""

from __future__ import annotations

from typing import Any

import pytest

from app.formats.anthropic_messages import (
    UnreadableAnswer,
    UnsupportedContent,
    error_body,
    to_chat,
    to_message,
)
from testkit.anthropic_sdk import FUNCTION, WEATHER


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
            "thinking": {"type": "disabled"},  # what a chat server does anyway
            "service_tier": "auto",
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


_USE = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}


_RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}


@pytest.mark.parametrize(
    ("choice", "chat_choice"),
    [
        (None, None),
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tools_and_tool_choice_become_function_tools(choice: Any, chat_choice: Any) -> None:
    params = {"model": "m", "max_tokens": 8, "messages": [], "tools": [WEATHER]}
    if choice is not None:
        params["tool_choice"] = choice
    chat = to_chat(params)
    assert chat["tools"] == [FUNCTION]
    assert chat.get("tool_choice") == chat_choice
    assert "parallel_tool_calls" not in chat


def test_disable_parallel_tool_use_becomes_parallel_tool_calls_false() -> None:
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    chat = to_chat({"model": "m", "max_tokens": 8, "messages": [], "tools": [WEATHER], "tool_choice": choice})
    assert (chat["tool_choice"], chat["parallel_tool_calls"]) == ("auto", False)


def test_tool_use_and_tool_result_blocks_become_tool_calls_and_tool_messages() -> None:
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    other = {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}}
    messages = [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}, call, other]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "no such city"}],
                    "is_error": True,
                },
                {"type": "text", "text": "Thanks."},
            ],
        },
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]},
    ]
    chat = to_chat({"model": "m", "max_tokens": 8, "messages": messages, "tools": [WEATHER]})
    paris = {
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    oslo = {
        "id": "toolu_2",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [paris, oslo]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "no such city"},
        {"role": "user", "content": "Thanks."},
        {"role": "assistant", "content": None, "tool_calls": [paris]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": ""},
    ]


@pytest.mark.parametrize(
    ("params", "refusal"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"thinking": {"type": "adaptive"}}, "thinking"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "server tool"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, _RESULT]}]},
            "must come first",
        ),
        ({"messages": [{"role": "user", "content": [_USE]}]}, "'tool_use'"),
        ({"messages": [{"role": "assistant", "content": [_RESULT]}]}, "'tool_result'"),
        (
            {"messages": [{"role": "user", "content": [{**_RESULT, "content": [{"type": "image"}]}]}]},
            "'image'",
        ),
    ],
)
def test_what_a_chat_server_cannot_carry_is_refused(params: dict[str, Any], refusal: str) -> None:
    with pytest.raises(UnsupportedContent, match=refusal):
        to_chat({"model": "m", "max_tokens": 8, "messages": [], **params})


def _tool_answer(
    arguments: Any, finish_reason: str = "tool_calls", text: str | None = None
) -> dict[str, Any]:
    call = {"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    chat = _chat(finish_reason=finish_reason)
    chat["choices"][0]["message"] = {"role": "assistant", "content": text, "tool_calls": [call]}
    return chat


def test_tool_calls_become_tool_use_blocks_with_stop_reason_tool_use() -> None:
    types = pytest.importorskip("anthropic.types")
    message = to_message(_tool_answer('{"city": "Paris"}'), "m")
    assert message["stop_reason"] == "tool_use" and message["stop_sequence"] is None
    (block,) = message["content"]  # no empty text block before the call
    assert (block["type"], block["id"], block["name"]) == ("tool_use", "call_7", "get_weather")
    assert block["input"] == {"city": "Paris"}
    assert set(types.ToolUseBlock.model_fields) <= set(block)
    parsed = types.Message.model_validate(message)
    assert parsed.content[0].input == {"city": "Paris"}  # type: ignore[union-attr]


def test_text_before_a_tool_call_and_a_stop_finish_reason() -> None:
    # Ollama ends a tool-calling turn with "stop"; the call still says why the turn ended.
    message = to_message(_tool_answer("{}", finish_reason="stop", text="Looking."), "m")
    assert [block["type"] for block in message["content"]] == ["text", "tool_use"]
    assert message["content"][1]["input"] == {} and message["stop_reason"] == "tool_use"
    assert to_message(_tool_answer("{}", finish_reason="length"), "m")["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("arguments", ['{"city": ', "[1, 2]", '"Paris"'])
def test_tool_arguments_that_are_not_a_json_object_are_unreadable(arguments: str) -> None:
    with pytest.raises(UnreadableAnswer, match="not a JSON object"):
        to_message(_tool_answer(arguments), "m")
