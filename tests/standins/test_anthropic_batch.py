"""The Anthropic Message Batches stand-in, driven by the official anthropic SDK: every answer
parses as the SDK's types (the stand-in also checks each before sending it), and its faults
raise the SDK's own errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import pytest
from anthropic import AsyncAnthropic

from testkit.standins.anthropic_batch import BATCHES, AnthropicBatchStandin
from testkit.standins.serve import serve


@pytest.fixture
async def api() -> AsyncIterator[tuple[AnthropicBatchStandin, AsyncAnthropic]]:
    standin = AnthropicBatchStandin()
    async with serve(standin) as url:
        yield standin, AsyncAnthropic(base_url=url, api_key="x", max_retries=0)


def entry(custom_id: str, text: str) -> anthropic.types.messages.batch_create_params.Request:
    return {
        "custom_id": custom_id,
        "params": {
            "model": "claude-haiku-4-5",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": text}],
        },
    }


async def test_a_batch_through_its_life(api: tuple[AnthropicBatchStandin, AsyncAnthropic]) -> None:
    standin, client = api
    standin.polls_to_end = 2
    standin.outcome_for = {"bad": "errored", "late": "expired"}
    created = await client.messages.batches.create(
        requests=[entry("a", "hello"), entry("b", "bad"), entry("c", "late")]
    )
    assert created.processing_status == "in_progress" and created.request_counts.processing == 3
    assert (await client.messages.batches.retrieve(created.id)).processing_status == "in_progress"
    ended = await client.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended" and ended.results_url
    counts = ended.request_counts
    assert (counts.succeeded, counts.errored, counts.expired) == (1, 1, 1)
    results = {r.custom_id: r.result async for r in await client.messages.batches.results(created.id)}
    assert results["a"].type == "succeeded" and results["a"].message.content[0].type == "text"
    assert results["b"].type == "errored" and results["b"].error.error.type == "invalid_request_error"
    assert results["c"].type == "expired"
    listed = [b.id async for b in client.messages.batches.list(limit=1)]
    assert listed == [created.id]
    assert (await client.messages.batches.delete(created.id)).type == "message_batch_deleted"


async def test_a_cancel_ends_the_unfinished_requests_canceled(
    api: tuple[AnthropicBatchStandin, AsyncAnthropic],
) -> None:
    standin, client = api
    standin.polls_to_end = 100
    created = await client.messages.batches.create(requests=[entry("a", "x")])
    assert (await client.messages.batches.cancel(created.id)).processing_status == "canceling"
    ended = await client.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 1
    [result] = [r async for r in await client.messages.batches.results(created.id)]
    assert result.result.type == "canceled"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, anthropic.RateLimitError),
        (529, anthropic.OverloadedError),
        (500, anthropic.InternalServerError),
    ],
)
async def test_faults_are_the_sdks_errors(
    api: tuple[AnthropicBatchStandin, AsyncAnthropic], status: int, error: type[Exception]
) -> None:
    standin, client = api
    standin.fail_next = {f"GET {BATCHES}": [status]}
    standin.retry_after = "3"
    with pytest.raises(error) as raised:
        await client.messages.batches.list()
    assert isinstance(raised.value, anthropic.APIStatusError) and raised.value.status_code == status
    if status != 500:
        assert raised.value.response.headers["retry-after"] == "3"


async def test_a_refused_key_and_expired_results(api: tuple[AnthropicBatchStandin, AsyncAnthropic]) -> None:
    standin, client = api
    standin.refuse_key = True
    with pytest.raises(anthropic.AuthenticationError):
        await client.messages.batches.list()
    standin.refuse_key, standin.results_expired = False, True
    created = await client.messages.batches.create(requests=[entry("a", "x")])
    ended = await client.messages.batches.retrieve(created.id)
    assert ended.archived_at is not None
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.results(created.id)
