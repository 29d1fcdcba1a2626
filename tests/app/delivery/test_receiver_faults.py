"""Receivers that misbehave cannot trap other deliveries or the deliver step (issue 13: 1, 2, 7):
an answer PostgreSQL cannot store, a body dripped a byte at a time or never ending, and custom
ids that are not valid header values."""

from __future__ import annotations

import asyncio
from typing import Any

from app.channels.base import EXCERPT_BYTES, Message, SendResult
from app.channels.webhook import WebhookChannel
from app.core.runs.local import MAX_RUN_FAILURES
from app.db.models import Delivery
from app.ground.steps import Step
from testkit import RunningApp, StartApp, fast_settings, wait_until
from testkit.faults import kill_runs
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

POISON = b'{"detail":"bad\x00byte"}'


async def delivery_of(app: RunningApp, custom_id: str) -> dict[str, Any]:
    answer = await app.client.get(f"/api/requests/{custom_id}")
    assert answer.status_code == 200, answer.text
    delivery: dict[str, Any] = answer.json()["delivery"] or {"attempts": 0}
    return delivery


async def test_an_answer_the_database_cannot_store_holds_back_nothing(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    good = [f"good-{n}" for n in range(20)]
    receiver.status_for["poison"] = 503
    receiver.retry_after_for["poison"] = "nan"
    receiver.body_for["poison"] = POISON
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        for custom_id in ["poison", *good]:
            assert (await app.submit(custom_id, receiver.url + "/hook")).status_code == 202

        async def poison_retried_and_good_delivered() -> bool:
            # The good ones may come in later batches than the poisoned one: wait for both.
            return (
                len(receiver.successes()) >= len(good) and (await delivery_of(app, "poison"))["attempts"] >= 3
            )

        await wait_until(
            poison_retried_and_good_delivered,
            timeout=30,
            what="the poisoned delivery's attempts and the good ones",
        )
        # Every good delivery went once: none was re-sent with the poisoned one's chunk.
        assert sorted(r.custom_id for r in receiver.successes()) == sorted(good)
        poisoned = await delivery_of(app, "poison")
        assert poisoned["status"] == "retrying"
        assert poisoned["attempt_log"][0]["response_excerpt"] == '{"detail":"bad\ufffdbyte"}'


def message(url: str, custom_id: str) -> Message:
    return Message("dlv_1", custom_id, 1, b"{}", {"type": "webhook", "webhook_url": url})


async def send_once(receiver: WebhookReceiver, custom_id: str, timeout_seconds: float) -> SendResult:
    """One webhook attempt to the receiver, guarded by a deadline of its own: without the
    channel's deadline a dripping or endless answer would never end."""
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite://", webhook_timeout_seconds=timeout_seconds))
    try:
        async with asyncio.timeout(20):
            return await channel.send(message(receiver.url + "/hook", custom_id))
    finally:
        await channel.close()


async def test_a_dripping_or_endless_answer_ends_within_the_deadline(receiver: WebhookReceiver) -> None:
    receiver.drip_for["drip"] = 0.05
    dripped = await send_once(receiver, "drip", timeout_seconds=1)
    # The receiver answered 200: that is its answer, however slowly the body follows.
    assert (dripped.outcome, dripped.http_status) == ("success", 200)
    assert 0 < len(dripped.response_excerpt or "") < EXCERPT_BYTES


async def test_an_endless_body_is_read_only_up_to_the_excerpt(receiver: WebhookReceiver) -> None:
    receiver.drip_for["flood"] = 0  # as fast as the connection takes it, for ever
    flooded = await send_once(receiver, "flood", timeout_seconds=30)
    assert flooded.outcome == "success" and len(flooded.response_excerpt or "") == EXCERPT_BYTES


async def test_custom_ids_that_are_not_header_values_are_delivered(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    ids = {"müller-1": "m%C3%BCller-1", " lead": "%20lead", "trail ": "trail%20", "plain": "plain"}
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        for custom_id in ids:
            assert (await app.submit(custom_id, receiver.url + "/hook")).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes()) == len(ids))
    by_body = {r.json["custom_id"]: r.headers["x-batchgate-custom-id"] for r in receiver.successes()}
    assert by_body == ids


async def test_a_retried_batch_delivers_no_stale_failure(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # The batch fails (its runs die with their process), and its failure's delivery keeps
    # retrying (the receiver answers 500) while the operator runs the batch again.
    inference.delay_for["again"] = 120
    receiver.status_for["again"] = 500
    settings = fast_settings(database_url, inference.url + "/v1", delivery_max_attempts=100)
    async with start_app(settings) as app:
        await app.submit("again", receiver.url + "/hook")
        await kill_runs(app, inference, "again", MAX_RUN_FAILURES)
        await receiver.wait_for(lambda r: len(r.received) >= 2, timeout=30)
        failure = await delivery_of(app, "again")
        assert failure["status"] == "retrying"
        batch_id = (await app.client.get("/api/requests/again")).json()["batch_id"]

        del inference.delay_for["again"]
        assert (await app.client.post(f"/api/batches/{batch_id}/retry")).status_code == 202
        del receiver.status_for["again"]  # only now may a send succeed: the old one must not
        await receiver.wait_for(lambda r: any(x.json["error"] is None for x in r.successes()))
        # The old delivery ended superseded: it sends nothing more, whatever its backoff says.
        async with app.db.transaction() as session:
            old = await session.get(Delivery, int(failure["id"].removeprefix("dlv_")))
            assert old is not None and old.status == "superseded" and old.next_attempt_at is None
        await app.worker.steps[Step.DELIVER].run_once()
        assert [x.json["error"] is None for x in receiver.successes()] == [True]
