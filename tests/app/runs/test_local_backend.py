"""Adapter behaviour that is awkward to reach end to end: timeouts, Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from app.backends.base import BatchLine
from app.backends.local import RESULTS_WAITING_PER_SLOT, LocalBackend
from app.channels.base import Message
from app.channels.webhook import WebhookChannel
from testkit import fast_settings, wait_until
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver


def message(url: str, custom_id: str = "c1") -> Message:
    return Message("dlv_1", custom_id, 1, b'{"custom_id":"c1"}', {"type": "webhook", "webhook_url": url})


async def test_webhook_timeout_is_a_retryable_failure(receiver: WebhookReceiver) -> None:
    receiver.delay_for["c1"] = 2.0
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite://", webhook_timeout_seconds=0.2))
    try:
        result = await channel.send(message(receiver.url + "/hook"))
    finally:
        await channel.close()
    assert result.outcome == "retryable_failure"
    assert result.error and result.error.startswith("timeout")


async def test_429_retry_after_is_reported(receiver: WebhookReceiver) -> None:
    receiver.fail_first["c1"] = 1
    receiver.fail_status = 429
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite://"))
    try:
        result = await channel.send(message(receiver.url + "/hook"))
        assert (result.outcome, result.http_status) == ("retryable_failure", 429)
        assert (await channel.send(message(receiver.url + "/hook"))).outcome == "success"
    finally:
        await channel.close()


async def test_local_backend_honours_retry_after_on_429(inference: InferenceStandin) -> None:
    inference.fail_first["slow down"] = 1
    inference.fail_status = 429
    inference.retry_after = 0.3
    backend = LocalBackend(fast_settings("sqlite+aiosqlite://", inference.url + "/v1"))
    try:
        line = BatchLine(1, "c1", "/v1/chat/completions", {"model": "m", "user": "slow down"})
        result = await backend.run_line(line)
    finally:
        await backend.close()
    assert result.succeeded and result.attempts == 2
    # The wait it asked for, and its bounds, are the shared parser's (tests/unit/test_outbound.py).


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
