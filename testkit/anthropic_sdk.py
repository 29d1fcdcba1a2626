"""The official Anthropic SDK pointed at the Anthropic face: Message Batches entries, a client,
waiting for a batch to end and reading its results, and Anthropic's error shape checked."""

from __future__ import annotations

from typing import Any

import httpx
from anthropic import AsyncAnthropic
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from testkit.apps import RunningApp
from testkit.waiting import wait_until

# One tool as the Anthropic API declares it (WEATHER) and as a chat server is sent it (FUNCTION).
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

FUNCTION = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": WEATHER["input_schema"],
        "description": "The weather in a city",
    },
}


def entry(custom_id: str, text: str | None = None, **params: Any) -> dict[str, Any]:
    body = {
        "model": "stand-in",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text or custom_id}],
    }
    return {"custom_id": custom_id, "params": body | params}


def sdk(app: RunningApp, prefix: str = "") -> AsyncAnthropic:
    # No SDK retries: an answer the SDK would retry must fail the test, not slow it down.
    return AsyncAnthropic(base_url=app.url + prefix, api_key="x", max_retries=0)


async def ended(client: AsyncAnthropic, batch_id: str) -> MessageBatch:
    async def done() -> bool:
        return (await client.messages.batches.retrieve(batch_id)).processing_status == "ended"

    await wait_until(done, timeout=20, what=f"{batch_id} ended")
    return await client.messages.batches.retrieve(batch_id)


async def results_of(client: AsyncAnthropic, batch_id: str) -> dict[str, MessageBatchIndividualResponse]:
    return {r.custom_id: r async for r in await client.messages.batches.results(batch_id)}


def refused(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """The body of an error answer in Anthropic's shape, checked along with x-should-retry."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert response.headers["x-should-retry"] == "false"
    return body
