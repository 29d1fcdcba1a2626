"""The Anthropic face driven by the official SDK, unchanged but for base_url and api_key, on SQLite
and PostgreSQL: Message Batches run on the local backend (the inference stand-in), come back as
Anthropic results, page, cancel and delete as the SDK expects, and refuse bad input in Anthropic's
error shape."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from tests.standins.inference import InferenceStandin
from tests.support import RunningApp, StartApp, fast_settings, wait_until

FORWARDED = {"x-forwarded-proto": "https", "x-forwarded-host": "gw.example", "x-forwarded-prefix": "/llm/"}


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


async def test_a_batch_runs_and_its_results_are_anthropic_results(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    inference.status_for["bad"] = 400
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        client = sdk(app)
        created = await client.messages.batches.create(
            requests=[entry("a"), entry("b-2"), entry("bad")]  # type: ignore[list-item]
        )
        assert created.id.startswith("msgbatch_") and created.type == "message_batch"
        assert (created.processing_status, created.results_url, created.ended_at) == (
            "in_progress",
            None,
            None,
        )
        assert created.request_counts.processing + created.request_counts.succeeded == 3

        batch = await ended(client, created.id)
        raw = (await app.client.get(f"/v1/messages/batches/{batch.id}")).json()
        assert set(raw) == set(MessageBatch.model_fields)
        assert raw["archived_at"] is None and raw["created_at"].endswith("Z")
        assert batch.ended_at is not None and batch.expires_at > batch.created_at
        assert batch.cancel_initiated_at is None
        assert batch.request_counts.model_dump() == {
            "processing": 0,
            "succeeded": 2,
            "errored": 1,
            "canceled": 0,
            "expired": 0,
        }
        assert batch.results_url == f"{app.url}/v1/messages/batches/{batch.id}/results"

        results = await results_of(client, batch.id)
        assert sorted(results) == ["a", "b-2", "bad"]
        for custom_id in ("a", "b-2"):
            result = results[custom_id].result
            assert result.type == "succeeded"
            assert result.message.content[0].text == f"echo: {custom_id}"  # type: ignore[union-attr]
        errored = results["bad"].result
        assert errored.type == "errored" and errored.error.error.type == "invalid_request_error"

        download = await app.client.get(batch.results_url)
        assert download.headers["content-type"].startswith("application/x-jsonl")
        lines = [httpx.Response(200, content=line).json() for line in download.content.splitlines()]
        message = next(line["result"]["message"] for line in lines if line["custom_id"] == "a")
        assert set(Message.model_fields) <= set(message), set(Message.model_fields) - set(message)
        Message.model_validate(message)


async def test_batches_page_newest_first_both_ways_with_has_more_exact(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        b1, b2, b3 = [(await client.messages.batches.create(requests=[entry("x")])).id for _ in range(3)]  # type: ignore[list-item]

        first = await client.messages.batches.list(limit=2)
        assert ([b.id for b in first.data], first.has_more) == ([b3, b2], True)
        assert (first.first_id, first.last_id) == (b3, b2)
        rest = await client.messages.batches.list(limit=2, after_id=b2)
        assert ([b.id for b in rest.data], rest.has_more) == ([b1], False)
        newer = await client.messages.batches.list(limit=1, before_id=b1)
        assert ([b.id for b in newer.data], newer.has_more) == ([b2], True)
        newest = await client.messages.batches.list(limit=2, before_id=b2)
        assert ([b.id for b in newest.data], newest.has_more) == ([b3], False)

        assert [b.id async for b in client.messages.batches.list(limit=2)] == [b3, b2, b1]
        assert [b.id async for b in client.messages.batches.list(limit=1, before_id=b1)] == [b2, b3]
        empty = await client.messages.batches.list(after_id=b1)
        assert (empty.data, empty.has_more, empty.first_id, empty.last_id) == ([], False, None, None)

        for query in ("limit=0", "limit=1001", "after_id=nope", f"after_id={b1}&before_id={b2}"):
            refused(await app.client.get(f"/v1/messages/batches?{query}"), 400, "invalid_request_error")
        for missing in ("msgbatch_999", "msgbatch_01", "msgbatch_x", "1"):
            refused(await app.client.get(f"/v1/messages/batches/{missing}"), 404, "not_found_error")
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.batches.retrieve("msgbatch_999")


async def test_a_cancel_while_running_ends_the_rest_canceled_and_an_ended_batch_deletes(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    inference.delay_seconds = 0.5
    settings = fast_settings(database_url, inference.url + "/v1", local_concurrency=1)
    async with start_app(settings) as app:
        client = sdk(app)
        batch = await client.messages.batches.create(
            requests=[entry(f"r{i}") for i in range(5)]  # type: ignore[misc]
        )
        await wait_until(lambda: inference.calls, timeout=10, what="the first request reached the stand-in")
        path = f"/v1/messages/batches/{batch.id}"
        refused(await app.client.get(path + "/results"), 400, "invalid_request_error")
        refused(await app.client.delete(path), 400, "invalid_request_error")

        canceling = await client.messages.batches.cancel(batch.id)
        assert canceling.processing_status in ("canceling", "ended")
        assert canceling.cancel_initiated_at is not None
        assert (await client.messages.batches.cancel(batch.id)).id == batch.id  # twice is fine

        done = await ended(client, batch.id)
        counts = done.request_counts
        assert counts.canceled >= 3 and counts.processing == 0
        assert counts.canceled + counts.succeeded == 5
        kinds = [r.result.type for r in (await results_of(client, batch.id)).values()]
        assert kinds.count("canceled") == counts.canceled and len(kinds) == 5

        deleted = await client.messages.batches.delete(batch.id)
        assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
        refused(await app.client.get(path), 404, "not_found_error")


async def test_bad_requests_are_refused_whole_in_anthropic_shape(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        no_max_tokens = entry("ok")
        del no_max_tokens["params"]["max_tokens"]
        bad = [entry("has space"), entry("dup"), entry("dup"), no_max_tokens]
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.batches.create(requests=bad)  # type: ignore[arg-type]
        response = caught.value.response
        message = refused(response, 400, "invalid_request_error")["error"]["message"]
        for where in ("requests.0.custom_id", "requests.2.custom_id", "requests.3.params.max_tokens"):
            assert where in message, message

        refused(await app.client.post("/v1/messages/batches", content=b"{nope"), 400, "invalid_request_error")
        refused(
            await app.client.post("/v1/messages/batches", json={"requests": []}), 400, "invalid_request_error"
        )
        assert (await client.messages.batches.list()).data == []
        # The native API keeps its own error shape.
        assert "errors" in (await app.client.get("/api/batches/999")).json()


async def test_the_api_prefix_mount_and_forwarded_headers_shape_results_url(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        client = sdk(app, "/api/anthropic")
        batch = await ended(client, (await client.messages.batches.create(requests=[entry("p")])).id)  # type: ignore[list-item]
        assert batch.results_url == f"{app.url}/api/anthropic/v1/messages/batches/{batch.id}/results"
        assert [r.result.type for r in (await results_of(client, batch.id)).values()] == ["succeeded"]

        for mount in ("/api/anthropic/v1", "/v1"):
            seen = (await app.client.get(f"{mount}/messages/batches/{batch.id}", headers=FORWARDED)).json()
            assert seen["results_url"] == f"https://gw.example/llm{mount}/messages/batches/{batch.id}/results"
        refused(await app.client.get("/api/anthropic/v1/messages/batches/msgbatch_0"), 404, "not_found_error")
