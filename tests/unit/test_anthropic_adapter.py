"""The Anthropic batch adapter's error mapping, against canned answers (no server): 401/403 refuse
the key at once, 429/529/5xx are retried (retry-after honoured) then raised with Anthropic's
error type, other 4xx are raised at once, and the create is never retried by the adapter."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import httpx
import pytest

from app.backends import calls
from app.backends.anthropic_batch import AnthropicBatchBackend
from app.backends.base import AuthRefused, BatchAPIError
from app.net.outbound import RetryPolicy


def error(status: int, kind: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"type": "error", "error": {"type": kind, "message": f"{kind} here"}}
    return httpx.Response(status, json=body, headers=headers)


def backend(answers: list[httpx.Response], seen: list[httpx.Request]) -> AnthropicBatchBackend:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    transport = httpx.MockTransport(answer)
    return AnthropicBatchBackend(
        "anthropic", "sk-ant", "http://api.test", retries=RetryPolicy(2, 0.0), transport=transport
    )


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(calls.asyncio, "sleep", sleep)
    return slept


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_raises_auth_refused_at_once(status: int, waits: list[float]) -> None:
    seen: list[httpx.Request] = []
    api = backend([error(status, "authentication_error")], seen)
    with pytest.raises(AuthRefused) as raised:
        await api.get_batch("msgbatch_1")
    assert (raised.value.status, raised.value.code, len(seen)) == (status, "authentication_error", 1)
    assert seen[0].headers["x-api-key"] == "sk-ant" and seen[0].headers["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize(
    ("status", "kind"), [(429, "rate_limit_error"), (529, "overloaded_error"), (500, "api_error")]
)
async def test_busy_answers_are_retried_honouring_retry_after_then_raised(
    status: int, kind: str, waits: list[float]
) -> None:
    seen: list[httpx.Request] = []
    api = backend([error(status, kind, {"retry-after": "7"})] * 3, seen)
    with pytest.raises(BatchAPIError) as raised:
        await api.list_batches()
    assert len(seen) == 3 and waits == [7.0, 7.0]
    assert (raised.value.status, raised.value.code, raised.value.retryable) == (status, kind, True)
    assert raised.value.outcome_unknown is (status >= 500)


async def test_a_busy_answer_then_success_returns_the_answer(waits: list[float]) -> None:
    seen: list[httpx.Request] = []
    batch = {"id": "msgbatch_1", "processing_status": "in_progress"}
    api = backend([error(529, "overloaded_error"), httpx.Response(200, json=batch)], seen)
    assert await api.get_batch("msgbatch_1") == batch


async def test_an_invalid_request_is_not_retried(waits: list[float]) -> None:
    seen: list[httpx.Request] = []
    api = backend([error(400, "invalid_request_error")], seen)
    with pytest.raises(BatchAPIError) as raised:
        await api.get_batch("x")
    assert (raised.value.retryable, len(seen), waits) == (False, 1, [])


async def test_the_create_is_sent_once_and_streams_its_body(waits: list[float]) -> None:
    seen: list[httpx.Request] = []
    api = backend([error(529, "overloaded_error")], seen)
    body = json.dumps({"requests": [{"custom_id": "a", "params": {}}]}).encode()
    with pytest.raises(BatchAPIError) as raised:
        await api.create_batch(io.BytesIO(body))
    assert len(seen) == 1 and raised.value.outcome_unknown
    assert seen[0].url.path == "/v1/messages/batches"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda api: api.cancel_batch("gone"), "gone"),
        (lambda api: api.delete_batch("gone"), False),
    ],
)
async def test_a_missing_batch_is_an_answer_not_an_error(
    call: Callable[[AnthropicBatchBackend], object], expected: object, waits: list[float]
) -> None:
    api = backend([error(404, "not_found_error")], [])
    assert await call(api) == expected  # type: ignore[misc]


async def test_results_are_streamed_line_by_line(waits: list[float]) -> None:
    lines = b'{"custom_id": "a"}\n\n{"custom_id": "b"}\n'
    api = backend([httpx.Response(200, content=lines)], [])
    got = [line async for line in api.result_lines("/v1/messages/batches/m/results")]
    assert got == ['{"custom_id": "a"}', '{"custom_id": "b"}']


async def test_the_probe_says_whether_the_key_is_accepted() -> None:
    assert (await backend([httpx.Response(200, json={"data": []})], []).probe()).reachable
    refused = await backend([error(401, "authentication_error")], []).probe()
    assert not refused.reachable and "refuses our key (401)" in refused.detail
    keyless = AnthropicBatchBackend("anthropic", None)
    assert not (await keyless.probe()).reachable
    await keyless.close()


async def test_results_elsewhere_are_not_fetched_with_our_key() -> None:
    seen: list[httpx.Request] = []
    api = backend([httpx.Response(200, content=b"{}\n")], seen)
    with pytest.raises(BatchAPIError, match="is not on"):
        _ = [line async for line in api.result_lines("https://elsewhere.test/results")]
    assert seen == []
    same = [line async for line in api.result_lines("http://api.test/v1/messages/batches/m/results")]
    assert same == ["{}"]


@pytest.mark.parametrize("status", [400, 409])
async def test_a_cancel_refused_because_the_batch_ended_says_finished(
    status: int, waits: list[float]
) -> None:
    api = backend([error(status, "invalid_request_error")], [])
    assert await api.cancel_batch("ended") == "finished"
