"""Auto concurrency (LOCAL_CONCURRENCY=auto, the default) against an inference server that serves
N requests at once and answers 429 to those that wait too long beyond them: the local backend
finds about N, few calls are refused, and every line still succeeds."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import func, select

from app.backends.base import BatchLine
from app.backends.local import LocalBackend
from app.db.models import Request
from testkit import NO_DELIVERY, StartApp, chat, fast_settings, request_payload, wait_until
from testkit.standins.inference import InferenceStandin

CAPACITY = 6


def limited(inference: InferenceStandin) -> InferenceStandin:
    """The stand-in as a server of CAPACITY places, each call taking 200 ms to serve (long beside
    the time the calls take in the test's process, which the limit counts in flight too)."""
    inference.capacity = CAPACITY
    inference.delay_seconds = 0.2
    # A brief queue, then 429; longer than the event loop may stall (the app shares it), so that
    # only a limit past the capacity is refused.
    inference.queue_seconds = 0.4
    return inference


async def test_auto_concurrency_finds_the_capacity_of_the_server(
    sqlite_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    limited(inference)
    n = 240
    settings = fast_settings(sqlite_url, inference.url + "/v1", batch_max_requests=200)
    assert settings.local_concurrency == "auto"
    async with start_app(settings) as app:
        backend = app.worker.line_runners[0].backend
        assert isinstance(backend, LocalBackend)
        peak = backend.concurrency_now
        items = [request_payload(f"r{i}", NO_DELIVERY, messages=chat(f"line {i}")) for i in range(n)]
        assert (await app.client.post("/api/requests/bulk", json=items)).status_code in (200, 202)

        async def all_succeeded() -> bool:
            nonlocal peak
            peak = max(peak, backend.concurrency_now)
            async with app.db.transaction() as session:
                done = await session.scalar(
                    select(func.count()).where(Request.status == "succeeded", Request.custom_id.like("r%"))
                )
            return done == n

        await wait_until(
            all_succeeded, timeout=60, what=lambda: f"{n} succeeded ({inference.turned_away} 429s)"
        )
    calls = len(inference.calls)
    # It climbed to the server's capacity (every place in use at once) and not far past it.
    assert inference.max_serving == CAPACITY
    assert CAPACITY <= peak <= 3 * CAPACITY, peak
    # Few refusals: the latency of the queue beyond the capacity holds the limit back first.
    assert inference.turned_away <= 0.05 * calls, (inference.turned_away, calls)


async def test_a_fixed_concurrency_is_kept(inference: InferenceStandin) -> None:
    """LOCAL_CONCURRENCY=3: three calls in flight, never more, and no adapting to 429s."""
    limited(inference)
    backend = LocalBackend(fast_settings("sqlite+aiosqlite://", inference.url + "/v1", local_concurrency=3))

    async def lines() -> AsyncIterator[BatchLine]:
        for i in range(60):
            yield BatchLine(i, f"c{i}", "/v1/chat/completions", {"model": "m", "user": f"u{i}"})

    try:
        results = [result async for result in backend.run(lines())]
        assert backend.concurrency_now == 3 and backend.in_flight == 0
    finally:
        await backend.close()
    assert all(result.succeeded for result in results) and len(results) == 60
    assert inference.max_in_flight == 3 and inference.turned_away == 0


async def test_an_overloaded_answer_or_a_timeout_backs_auto_off(inference: InferenceStandin) -> None:
    """A 500 (the request's own failure as often as not) leaves the limit; a 503, retried as
    before after its Retry-After, halves it; a timeout halves it again."""
    inference.status_for["broken"] = 500
    inference.fail_first["busy"] = 1
    inference.fail_status, inference.retry_after = 503, 0.05
    inference.delay_for["slow"] = 1.0
    settings = fast_settings("sqlite+aiosqlite://", inference.url + "/v1", local_timeout_seconds=0.3)
    backend = LocalBackend(settings)

    def line(key: str) -> BatchLine:
        return BatchLine(1, key, "/v1/chat/completions", {"model": "m", "user": key})

    try:
        assert backend.concurrency_now == 4
        broken = await backend.run_line(line("broken"))
        assert broken.error is not None and backend.concurrency_now == 4
        busy = await backend.run_line(line("busy"))
        assert busy.succeeded and busy.attempts == 2
        assert backend.concurrency_now == 2
        slow = await backend.run_line(line("slow"))
        assert slow.error is not None and slow.error["code"] == "timeout"
        assert backend.concurrency_now == 1 and backend.in_flight == 0
    finally:
        await backend.close()
