"""End to end: REST intake → batching → local backend → signed webhook delivery, on both databases."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

from app.db.models import Batch, Delivery, DeliveryAttempt, Request
from testkit import RunningApp, StartApp, fast_settings, wait_until
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_one_request_is_delivered_signed(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", webhook_secret=SECRET)
    async with start_app(settings) as app:
        answer = await app.submit("greeting/1", receiver.url + "/hook")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "pending"
        await receiver.wait_for(lambda r: len(r.successes()) == 1, timeout=15)

        received = receiver.successes()[0]
        verified = Webhook(SECRET).verify(received.body, received.headers)
        assert verified["custom_id"] == "greeting/1"
        assert verified["response"]["status_code"] == 200
        assert verified["response"]["body"]["choices"][0]["message"]["content"] == "echo: greeting/1"
        assert verified["error"] is None
        assert received.headers["webhook-id"].startswith("dlv_")
        assert received.headers["x-batchgate-custom-id"] == "greeting/1"
        assert received.headers["x-batchgate-attempt"] == "1"
        assert abs(int(received.headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 60

        async def recorded() -> bool:
            detail = (await app.client.get("/api/requests/greeting/1")).json()
            return detail["delivery"] is not None and detail["delivery"]["status"] == "delivered"

        await wait_until(recorded, timeout=10, what="delivery recorded as delivered")
        detail = (await app.client.get("/api/requests/greeting/1")).json()
        assert detail["status"] == "succeeded"
        assert detail["result"]["custom_id"] == "greeting/1"
        assert detail["usage"]["total_tokens"] > 0
        assert [a["outcome"] for a in detail["delivery"]["attempt_log"]] == ["success"]
        batch = (await app.client.get(f"/api/batches/{detail['batch_id']}")).json()
        assert batch["status"] == "done"
        assert [e["to_status"] for e in batch["events"]] == [
            "building",
            "ready",
            "submitting",
            "processing",
            "collecting",
            "done",
        ]


async def delivery_rows(app: RunningApp) -> list[tuple[str, str, int]]:
    """(custom_id, delivery status, attempt rows) for every delivery."""
    async with app.db.transaction() as session:
        attempts = (
            select(func.count())
            .where(DeliveryAttempt.delivery_id == Delivery.id)
            .correlate(Delivery)
            .scalar_subquery()
        )
        rows = await session.execute(select(Request.custom_id, Delivery.status, attempts).join(Delivery))
        return sorted((c, s, int(n)) for c, s, n in rows)


async def wait_for_deliveries(
    app: RunningApp,
    expected: list[tuple[str, str, int]],
    timeout: float,  # noqa: ASYNC109 (a polling deadline, like wait_until's)
    what: str,
) -> None:
    """Wait until delivery_rows(app) is exactly `expected`."""

    async def reached() -> bool:
        return await delivery_rows(app) == expected

    await wait_until(reached, timeout=timeout, what=what)


async def test_500_requests_each_delivered_exactly_once(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # DELIVERY_CONCURRENCY=4 makes delivery chunks of 16: many chunks claimed, sent and recorded
    # while the ones beside them are still in flight.
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        local_concurrency=16,
        batch_max_requests=120,
        delivery_concurrency=4,
    )
    count = 500
    async with start_app(settings) as app:
        semaphore = asyncio.Semaphore(32)

        async def submit(i: int) -> int:
            async with semaphore:
                return (await app.submit(f"bulk-{i:04d}", receiver.url + "/hook")).status_code

        assert set(await asyncio.gather(*(submit(i) for i in range(count)))) == {202}
        await receiver.wait_for(lambda r: len(r.successes()) >= count, timeout=90)

        async def all_recorded() -> bool:
            rows = await delivery_rows(app)
            return len(rows) == count and {(s, n) for _, s, n in rows} == {("delivered", 1)}

        await wait_until(all_recorded, timeout=20, what="every delivery recorded, after one attempt")
        per_id = Counter(r.custom_id for r in receiver.received)
        assert per_id == Counter({f"bulk-{i:04d}": 1 for i in range(count)})
        assert len({r.headers["webhook-id"] for r in receiver.received}) == count
        assert inference.max_in_flight <= 16
        async with app.db.transaction() as session:
            sizes = (await session.scalars(select(Batch.request_count).where(Batch.status == "done"))).all()
            unfinished = await session.scalar(select(func.count()).where(Batch.status != "done"))
        assert sum(sizes) == count and max(sizes) <= 120 and unfinished == 0


async def test_receiver_failing_twice_is_delivered_on_the_third_attempt(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    receiver.fail_first["flaky"] = 2
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        await app.submit("flaky", receiver.url + "/hook")
        await receiver.wait_for(lambda r: len(r.successes("flaky")) == 1, timeout=20)

        await wait_for_deliveries(app, [("flaky", "delivered", 3)], timeout=10, what="3 attempts recorded")
        attempts = (await app.client.get("/api/requests/flaky")).json()["delivery"]["attempt_log"]
        assert [(a["number"], a["outcome"], a["http_status"]) for a in attempts] == [
            (1, "retryable_failure", 500),
            (2, "retryable_failure", 500),
            (3, "success", 200),
        ]
        assert [r.headers["x-batchgate-attempt"] for r in receiver.received] == ["1", "2", "3"]
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # stable across retries
        assert all(a["duration_ms"] >= 0 and a["started_at"] for a in attempts)


async def test_permanent_4xx_fails_at_once_and_redeliver_sends_again(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    receiver.status_for["gone"] = 410
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        await app.submit("gone", receiver.url + "/hook")

        await wait_for_deliveries(
            app, [("gone", "delivery_failed", 1)], timeout=20, what="delivery failed after one attempt"
        )
        detail = (await app.client.get("/api/requests/gone")).json()
        assert detail["delivery"]["last_error"] == "receiver answered 410"
        assert detail["delivery"]["attempt_log"][0]["outcome"] == "permanent_failure"

        del receiver.status_for["gone"]
        answer = await app.client.post("/api/requests/gone/redeliver")
        assert answer.status_code == 202 and answer.json()["status"] == "pending"
        await receiver.wait_for(lambda r: len(r.successes("gone")) == 1, timeout=20)

        await wait_for_deliveries(app, [("gone", "delivered", 2)], timeout=10, what="redelivery recorded")


async def test_redirect_is_not_followed_and_gives_up_after_max_attempts(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    receiver.status_for["moved"] = 302
    receiver.status_for["down"] = 503
    settings = fast_settings(database_url, inference.url + "/v1", delivery_max_attempts=3)
    async with start_app(settings) as app:
        await app.submit("moved", receiver.url + "/hook")
        await app.submit("down", receiver.url + "/hook")

        expected = [
            ("down", "delivery_failed", 3),
            ("moved", "delivery_failed", 1),
        ]
        await wait_for_deliveries(app, expected, timeout=30, what="both deliveries failed")
        assert len(receiver.by_custom_id()["down"]) == 3


async def test_inference_errors_are_retried_then_recorded_and_delivered(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    inference.fail_first["wobbly"] = 2  # recovers on the 3rd call
    inference.always_fail.add("broken")  # never recovers
    inference.status_for["rejected"] = 400  # a client error is the answer, not retried
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        for custom_id in ("wobbly", "broken", "rejected"):
            await app.submit(custom_id, receiver.url + "/hook")
        await receiver.wait_for(lambda r: len(r.successes()) == 3, timeout=30)
        lines = {r.json["custom_id"]: r.json for r in receiver.successes()}

        assert lines["wobbly"]["error"] is None
        assert lines["wobbly"]["response"]["status_code"] == 200
        assert inference.calls_by_key["wobbly"] == 3

        assert inference.calls_by_key["broken"] == 4  # 1 try + LOCAL_MAX_RETRIES (3)
        assert lines["broken"]["response"]["status_code"] == 500
        assert lines["broken"]["error"]["code"] == "server_error"

        assert inference.calls_by_key["rejected"] == 1
        assert lines["rejected"]["error"]["code"] == "http_400"

        statuses = {c: (await app.client.get(f"/api/requests/{c}")).json()["status"] for c in lines}
        assert statuses == {"wobbly": "succeeded", "broken": "failed", "rejected": "failed"}


async def test_unreachable_inference_server_ends_in_a_delivered_error(
    database_url: str, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, "http://127.0.0.1:9/v1")) as app:
        await app.submit("nowhere", receiver.url + "/hook")
        await receiver.wait_for(lambda r: len(r.successes()) == 1, timeout=30)
        line = receiver.successes()[0].json
        assert line["response"] is None
        assert line["error"]["code"] == "connection_error"


async def test_api_key_concurrency_and_pull_only_requests(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    inference.required_api_key = "sk-local"
    inference.delay_seconds = 0.05
    settings = fast_settings(
        database_url, inference.url + "/v1", local_api_key="sk-local", local_concurrency=3
    )
    async with start_app(settings) as app:
        for i in range(12):
            assert (await app.submit(f"pull-{i}", None)).status_code == 202

        async def all_done() -> bool:
            details = [(await app.client.get(f"/api/requests/pull-{i}")).json() for i in range(12)]
            return all(d["status"] == "succeeded" for d in details)

        await wait_until(all_done, timeout=30, what="12 pull-only requests succeeded")
        assert inference.max_in_flight == 3
        detail = (await app.client.get("/api/requests/pull-0")).json()
        assert detail["delivery"] is None
        assert detail["result"]["response"]["status_code"] == 200


async def test_a_result_the_database_refuses_fails_only_its_own_line(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    """Storing results is isolated per line (issue 13 item 5): an answer with a NUL is stored
    sanitised, and one no column holds (a token count beyond int64) fails its own request with
    result_not_stored while the rest of its batch succeeds, once each, and the batch is done."""
    inference.reply_for["nul"] = "a\x00b"
    inference.usage_for["doomed"] = {"prompt_tokens": 2**63, "completion_tokens": 1, "total_tokens": 2**63}
    ids = ("fine", "nul", "doomed")
    async with start_app(
        fast_settings(database_url, inference.url + "/v1", local_batch_max_age_seconds=2)
    ) as app:
        for custom_id in ids:
            assert (await app.submit(custom_id, receiver.url + "/hook")).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes()) == 3, timeout=30)
        lines = {r.json["custom_id"]: r.json for r in receiver.successes()}
        assert sorted(lines) == sorted(ids)
        assert lines["doomed"]["error"]["code"] == "result_not_stored"
        assert lines["fine"]["error"] is None and lines["nul"]["error"] is None
        content = lines["nul"]["response"]["body"]["choices"][0]["message"]["content"]
        assert content == "a\ufffdb"
        detail = (await app.client.get("/api/requests/doomed")).json()
        batch = (await app.client.get(f"/api/batches/{detail['batch_id']}")).json()
        assert batch["status"] == "done" and batch["request_count"] == 3
        assert (batch["completed_count"], batch["failed_count"]) == (2, 1)
        assert inference.calls_by_key["doomed"] == 1  # one run: nothing ran twice
