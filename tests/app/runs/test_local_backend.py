"""The local backend against the inference stand-in: the wait after a 429 is what Retry-After asks
(longer or shorter than the backoff), else the backoff; a read timeout not retried, calls paused
for a slow caller, Anthropic Messages lines (text and tool turns) answered as messages, and the
httpcore JSON POST it sends with (app.net.outbound)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpcore
import pytest

from app.backends.base import BatchLine
from app.backends.local import RESULTS_WAITING_PER_SLOT, LocalBackend
from app.net.outbound import NO_ANSWER, post_json
from testkit import fast_settings, wait_until
from testkit.anthropic_sdk import FUNCTION, WEATHER
from testkit.standins.inference import InferenceStandin
from testkit.standins.serve import serve


@pytest.mark.parametrize(
    ("retry_after", "backoff", "at_least", "at_most"),
    [
        (0.5, 0.01, 0.5, 5.0),  # the header's wait, not the short backoff
        (0.0, 30.0, 0.0, 5.0),  # the header's wait, not the long backoff (15-30 s)
        (None, 0.4, 0.2, 5.0),  # no header: the backoff, jittered within [0.5, 1] of it
    ],
    ids=["retry-after-longer", "retry-after-shorter", "no-retry-after"],
)
async def test_local_backend_waits_what_retry_after_asks_else_its_backoff(
    inference: InferenceStandin, retry_after: float | None, backoff: float, at_least: float, at_most: float
) -> None:
    inference.fail_first["slow down"] = 1
    inference.fail_status = 429
    inference.retry_after = retry_after
    settings = fast_settings(
        "sqlite+aiosqlite://", inference.url + "/v1", local_retry_backoff_seconds=backoff
    )
    backend = LocalBackend(settings)
    try:
        line = BatchLine(1, "c1", "/v1/chat/completions", {"model": "m", "user": "slow down"})
        async with asyncio.timeout(at_most + 1):  # a wait of the long backoff fails here, not later
            result = await backend.run_line(line)
    finally:
        await backend.close()
    assert result.succeeded and result.attempts == 2
    refused, retried = inference.calls
    assert (refused["status"], retried["status"]) == (429, 200)
    assert at_least <= retried["at"] - refused["at"] <= at_most


async def test_local_backend_does_not_retry_a_read_timeout(inference: InferenceStandin) -> None:
    inference.delay_seconds = 1.0
    backend = LocalBackend(
        fast_settings("sqlite+aiosqlite://", inference.url + "/v1", local_timeout_seconds=0.2)
    )
    try:
        result = await backend.run_line(BatchLine(1, "c1", "/v1/chat/completions", {"model": "m"}))
    finally:
        await backend.close()
    assert result.error is not None and result.error["code"] == "timeout"
    assert result.attempts == 1

    async def settled() -> bool:
        return inference.in_flight == 0

    await wait_until(settled, timeout=5, what="the stand-in to finish the abandoned call")
    assert len(inference.calls) == 1


async def test_local_backend_pauses_its_calls_for_a_slow_caller(inference: InferenceStandin) -> None:
    """Results wait in a bounded queue: a caller slower than the server (the database storing
    them) pauses the calls, instead of finished results piling up in memory."""
    concurrency, n = 2, 200
    backend = LocalBackend(
        fast_settings("sqlite+aiosqlite://", inference.url + "/v1", local_concurrency=concurrency)
    )

    async def lines() -> AsyncIterator[BatchLine]:
        for i in range(n):
            yield BatchLine(i, f"c{i}", "/v1/chat/completions", {"model": "m", "user": f"u{i}"})

    results = backend.run(lines())
    try:
        await anext(results)
        # The result taken, the full queue, and one result held by each worker waiting to queue it.
        most = 1 + RESULTS_WAITING_PER_SLOT * concurrency + concurrency

        async def paused() -> bool:
            return len(inference.calls) >= most and inference.in_flight == 0

        await wait_until(paused, timeout=10, what="the calls to pause")
        assert len(inference.calls) == most
        rest = [result async for result in results]
    finally:
        await results.aclose()
        await backend.close()
    assert len(rest) == n - 1 and all(result.succeeded for result in rest)


async def test_a_local_run_stopped_while_paused_ends(inference: InferenceStandin) -> None:
    """Stopping a run (shutdown, a lost lease) while its reader waits on full queues ends it: the
    reader must not wait for workers that were cancelled with it."""
    backend = LocalBackend(fast_settings("sqlite+aiosqlite://", inference.url + "/v1", local_concurrency=2))

    async def lines() -> AsyncIterator[BatchLine]:
        for i in range(200):
            yield BatchLine(i, f"c{i}", "/v1/chat/completions", {"model": "m", "user": f"u{i}"})

    results = backend.run(lines())
    try:
        await anext(results)

        async def paused() -> bool:
            return len(inference.calls) > 1 and inference.in_flight == 0

        await wait_until(paused, timeout=10, what="the calls to pause")
        await asyncio.wait_for(results.aclose(), timeout=10)
    finally:
        await backend.close()


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


async def test_local_backend_runs_a_tool_turn_both_ways(inference: InferenceStandin) -> None:
    backend = LocalBackend(fast_settings("sqlite+aiosqlite://", inference.url + "/v1"))
    asked = {
        "model": "claude-local",
        "max_tokens": 32,
        "tools": [WEATHER],
        "tool_choice": {"type": "any"},
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }
    inference.tool_call_for["Weather in Paris?"] = {"city": "Paris"}
    inference.tool_call_for["garbled"] = '{"city": '
    garbled = {**asked, "messages": [{"role": "user", "content": "garbled"}]}
    try:
        result = await backend.run_line(BatchLine(1, "c1", "/v1/messages", asked))
        unreadable = await backend.run_line(BatchLine(2, "c2", "/v1/messages", garbled))
    finally:
        await backend.close()
    assert result.succeeded and result.response is not None
    message = result.response["body"]
    assert message["stop_reason"] == "tool_use"
    assert message["content"][0] | {"id": "x"} == {
        "type": "tool_use",
        "id": "x",
        "name": "get_weather",
        "input": {"city": "Paris"},
        "caller": None,
        "toolset_name": None,
    }
    sent = inference.calls[0]["body"]
    assert (sent["tools"], sent["tool_choice"]) == ([FUNCTION], "required")
    assert unreadable.response is None and unreadable.error is not None
    assert unreadable.error["code"] == "unreadable_answer" and unreadable.attempts == 1


async def test_post_json_answers_as_httpx_and_raises_httpcore_errors_when_nothing_answers() -> None:
    async with serve(InferenceStandin()) as url, httpcore.AsyncConnectionPool() as connections:
        answer = await post_json(
            connections, url + "/v1/chat/completions", {"model": "m", "messages": []}, [], 5
        )
        assert answer.status_code == 200 and answer.json()["object"] == "chat.completion"
        with pytest.raises(NO_ANSWER):
            await post_json(connections, "http://127.0.0.1:9/v1/chat/completions", {}, [], 5)
