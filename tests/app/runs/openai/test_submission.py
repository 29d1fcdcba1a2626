"""The OpenAI backend against the stand-in Batch API, submitting and polling: 429s, API errors and
token limits retried a bounded number of times, a 401 that stops submission until the key works,
polling that gives up; each on SQLite and PostgreSQL. And the wait before a retry, at every place a
call is retried: what Retry-After asks, else the backoff."""

from __future__ import annotations

import asyncio
import io
import itertools
import re

import pytest

from app.backends.openai import OpenAIBackend
from testkit import StartApp, wait_until
from testkit.openai import (
    batches,
    delivered_bodies,
    finished,
    openai_settings,
    reasons,
    submit,
)
from testkit.standins.openai_batch import OpenAIBatchStandin
from testkit.standins.receiver import WebhookReceiver

RETRY_AFTER = 0.4  # seconds, against a backoff of 0.01 s (openai_settings)
CONTENT = r"GET /v1/files/[^/]+/content"


def gaps(api: OpenAIBatchStandin, pattern: str) -> list[float]:
    """Seconds between one call matching `pattern` ("METHOD /path", fullmatched) and the next."""
    times = [
        at
        for (method, path), at in zip(api.calls, api.call_times, strict=True)
        if re.fullmatch(pattern, f"{method} {path}")
    ]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_429_then_success_after_the_wait_retry_after_asks(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    """Each place the backend retries a call (every adapter call, the streamed download, the
    core's create loop) waits what Retry-After asks, not its 0.01 s backoff."""
    routes = (r"POST /v1/files", r"POST /v1/batches", CONTENT)
    openai_api.fail_matching = {route: [429] for route in routes}
    openai_api.retry_after = str(RETRY_AFTER)
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "r/1")
        details = await finished(app, "r/1")
        assert details["r/1"]["status"] == "succeeded"
    for route in routes:
        [waited] = gaps(openai_api, route)  # the refused call, then the one that succeeded
        assert waited >= RETRY_AFTER, (route, waited)


@pytest.mark.parametrize(
    ("retry_after", "backoff", "at_least", "at_most"),
    [
        ("0.5", 0.01, 0.5, 5.0),  # the header's wait, not the short backoff
        ("0", 30.0, 0.0, 5.0),  # the header's wait, not the long backoff (15-30 s)
        (None, 0.4, 0.2, 5.0),  # no header: the backoff, jittered within [0.5, 1] of it
    ],
    ids=["retry-after-longer", "retry-after-shorter", "no-retry-after"],
)
async def test_a_call_waits_what_retry_after_asks_else_its_backoff(
    openai_api: OpenAIBatchStandin, retry_after: str | None, backoff: float, at_least: float, at_most: float
) -> None:
    openai_api.fail_next = [429]
    openai_api.retry_after = retry_after
    settings = openai_settings("sqlite+aiosqlite://", openai_api, openai_retry_backoff_seconds=backoff)
    backend = OpenAIBackend(settings)
    try:
        async with asyncio.timeout(at_most + 1):  # a wait of the long backoff fails here, not later
            await backend.upload(io.BytesIO(b"{}\n"), "input.jsonl")
    finally:
        await backend.close()
    [waited] = gaps(openai_api, "POST /v1/files")
    assert at_least <= waited <= at_most


async def test_api_errors_are_retried_a_bounded_number_of_times_then_the_batch_fails(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.fail_next = [503] * 100
    settings = openai_settings(database_url, openai_api, openai_max_retries=1, openai_poll_seconds=0.01)
    async with start_app(settings) as app:
        await submit(app, receiver, "u/1")
        details = await finished(app, "u/1")
        assert details["u/1"]["status"] == "failed"
        assert delivered_bodies(receiver)["u/1"]["error"]["code"] == "submission_failed"
        [batch] = await batches(app)
        assert batch["status"] == "failed"
        assert "after 3 attempts" in reasons(batch)  # README: submission is tried 3 times
        # 3 submissions, each one call plus one retry.
        assert openai_api.calls.count(("POST", "/v1/files")) == 3 * 2


async def test_polling_gives_up_after_bounded_failures(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000
    settings = openai_settings(database_url, openai_api, openai_max_retries=0, openai_poll_seconds=0.01)
    async with start_app(settings) as app:
        await submit(app, receiver, "p/1")

        async def processing() -> bool:
            return bool(openai_api.batches)

        await wait_until(processing, timeout=10, what="remote batch created")
        openai_api.fail_next = [500] * 1000
        details = await finished(app, "p/1")
        assert details["p/1"]["status"] == "failed"
        assert delivered_bodies(receiver)["p/1"]["error"]["code"] == "remote_unreachable"
        [batch] = await batches(app)
        assert batch["status"] == "failed"
        assert "gave up after 8 failures" in reasons(batch)  # README: 8 consecutive failures


async def test_401_stops_submission_visibly_until_the_key_works(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.required_api_key = "sk-other"
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "k/1")

        async def blocked() -> bool:
            listed = await batches(app)
            return bool(listed) and "401" in (listed[0]["wait_reason"] or "")

        await wait_until(blocked, timeout=10, what="the batch waits on the refused key")
        health = (await app.client.get("/health")).json()
        assert health["status"] == "degraded"
        [openai] = [b for b in health["backends"] if b["name"] == "openai"]
        assert not openai["reachable"] and "401" in openai["detail"]
        dashboard = (await app.client.get("/")).text
        assert "refused the API key (401)" in dashboard

        # While refused, only the cheap key probe goes out, never another upload.
        async def probed_again() -> bool:
            return openai_api.calls.count(("GET", "/v1/models")) >= 2

        await wait_until(probed_again, timeout=10, what="the gate re-probes the key")
        assert openai_api.calls.count(("POST", "/v1/files")) == 1

        openai_api.required_api_key = "sk-test"
        details = await finished(app, "k/1")
        assert details["k/1"]["status"] == "succeeded"
        assert (await app.client.get("/health")).json()["status"] == "ok"


async def test_token_limit_exceeded_backs_off_then_succeeds(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.next_batches = [{"error_code": "token_limit_exceeded"}] * 2
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "t/1", "t/2")
        details = await finished(app, "t/1", "t/2")
        assert {d["status"] for d in details.values()} == {"succeeded"}
        [batch] = await batches(app)  # the same batch went again, not a new one
        assert batch["status"] == "done"
        assert "retry 1 of 5" in reasons(batch) and "retry 2 of 5" in reasons(batch)
        assert len(openai_api.created) == 3

        async def inputs_deleted() -> bool:  # the refused uploads too, not only the last one
            return {u["file_id"] for u in openai_api.uploads} <= set(openai_api.deleted_files)

        await wait_until(inputs_deleted, timeout=10, what="every uploaded input file deleted")


async def test_token_limit_exceeded_fails_after_its_retries(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.next_batches = [{"error_code": "token_limit_exceeded"}] * 10
    settings = openai_settings(database_url, openai_api, openai_token_limit_retries=2)
    async with start_app(settings) as app:
        await submit(app, receiver, "tf/1")
        details = await finished(app, "tf/1")
        assert details["tf/1"]["status"] == "failed"
        assert delivered_bodies(receiver)["tf/1"]["error"]["code"] == "token_limit_exceeded"
        assert len(openai_api.created) == 3
