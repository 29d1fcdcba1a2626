"""Tool use and thinking through the Anthropic face, driven by the official SDK on SQLite and
PostgreSQL: tools run on the local backend as chat function tools and come back as tool_use
blocks; the conversation goes on with tool_result blocks; what a chat server cannot do (thinking,
server tools) is refused at create, naming the param, instead of being dropped."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import ToolUseBlock

from testkit import StartApp, fast_settings
from testkit.anthropic_sdk import ended, entry, refused, results_of, sdk
from testkit.standins.inference import InferenceStandin

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


async def test_a_tool_call_comes_back_as_tool_use_and_the_turn_goes_on_with_its_result(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    inference.tool_call_for["Weather in Paris?"] = {"city": "Paris"}
    asked = entry("ask", "Weather in Paris?", tools=[WEATHER], tool_choice={"type": "auto"})
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        client = sdk(app)
        created = await client.messages.batches.create(requests=[asked])  # type: ignore[list-item]
        await ended(client, created.id)
        message = (await results_of(client, created.id))["ask"].result.message  # type: ignore[union-attr]
        assert message.stop_reason == "tool_use"
        (call,) = message.content
        assert isinstance(call, ToolUseBlock)
        assert (call.name, call.input) == ("get_weather", {"city": "Paris"})

        # The client runs the tool and sends the whole turn back, as the SDK's tool loop does.
        history: list[dict[str, Any]] = [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
            },
        ]
        # Keyed apart (the stand-in keys on metadata.user_id), so the stand-in answers in text.
        follow = entry("answer", tools=[WEATHER], metadata={"user_id": "after the tool"})
        follow["params"]["messages"] = history
        second = await client.messages.batches.create(requests=[follow])  # type: ignore[list-item]
        await ended(client, second.id)
        answer = (await results_of(client, second.id))["answer"].result.message  # type: ignore[union-attr]
        assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"

    sent = inference.calls[-1]["body"]
    assert sent["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": WEATHER["input_schema"],
            "description": WEATHER["description"],
        },
    }
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "requests.0.params.thinking"),
        ({"thinking": {"type": "adaptive"}}, "requests.0.params.thinking"),
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "requests.0.params.tools.0.type",
        ),
        ({"tools": [{"name": "f"}]}, "requests.0.params.tools.0.input_schema"),
        ({"tool_choice": {"type": "tool"}}, "requests.0.params.tool_choice.name"),
    ],
)
async def test_thinking_and_server_tools_are_refused_at_create_naming_the_param(
    sqlite_url: str, start_app: StartApp, params: dict[str, Any], where: str
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.batches.create(requests=[entry("a", **params)])  # type: ignore[list-item]
        message = refused(caught.value.response, 400, "invalid_request_error")["error"]["message"]
        assert where in message, message
        assert (await client.messages.batches.list()).data == []
        # thinking disabled is what a chat server does anyway: taken.
        await client.messages.batches.create(requests=[entry("b", thinking={"type": "disabled"})])  # type: ignore[list-item]
