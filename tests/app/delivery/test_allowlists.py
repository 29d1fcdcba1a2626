"""RABBITMQ_DELIVERY_QUEUES / RABBITMQ_DELIVERY_EXCHANGES: refused at intake from every face and
again at send time, and a queue outside the list is never declared; against the real broker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiormq.exceptions import ChannelNotFoundEntity
from sqlalchemy import select

from app.db.models import Delivery, DeliveryAttempt, Request
from app.net.destinations import rabbitmq_refusal
from testkit import (
    RABBITMQ_URL,
    Amqp,
    RunningApp,
    StartApp,
    fast_settings,
    request_payload,
    to_queue,
    wait_until,
)
from testkit.standins.inference import InferenceStandin

ALLOWED_QUEUES = "bg_test_allowed_*, results-exact"
ALLOWED_EXCHANGES = "bg_test_okex_*"


def allow_listed(database_url: str, inference: InferenceStandin | None, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "rabbitmq_url": RABBITMQ_URL,
        "rabbitmq_input_queue": "",
        "rabbitmq_delivery_queues": ALLOWED_QUEUES,
        "rabbitmq_delivery_exchanges": ALLOWED_EXCHANGES,
    }
    inference_url = inference.url + "/v1" if inference else "http://127.0.0.1:9/v1"
    return fast_settings(database_url, inference_url, **(values | overrides))


def test_each_list_takes_exact_names_and_patterns_and_empty_allows_anything() -> None:
    settings = fast_settings("sqlite+aiosqlite:///:memory:", rabbitmq_delivery_queues=ALLOWED_QUEUES)
    assert rabbitmq_refusal(settings, "bg_test_allowed_1", None) is None
    assert rabbitmq_refusal(settings, "results-exact", None) is None
    assert rabbitmq_refusal(settings, "results-exact-not", None) == (
        "queue 'results-exact-not' is not allowed by RABBITMQ_DELIVERY_QUEUES"
    )
    assert rabbitmq_refusal(settings, "BG_TEST_ALLOWED_1", None) is not None  # case matters, as in AMQP
    # RABBITMQ_DELIVERY_EXCHANGES is empty: exchanges stay unrestricted, as before.
    assert rabbitmq_refusal(settings, None, "amq.topic") is None
    assert rabbitmq_refusal(fast_settings("sqlite+aiosqlite:///:memory:"), "anything", None) is None


async def delivery_trail(app: RunningApp, custom_id: str) -> tuple[str | None, list[DeliveryAttempt]]:
    async with app.db.transaction() as session:
        delivery = await session.scalar(select(Delivery).join(Request).where(Request.custom_id == custom_id))
        if delivery is None:
            return None, []
        trail = await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery.id)
            .order_by(DeliveryAttempt.id)
        )
        return delivery.status, list(trail.all())


async def wait_status(app: RunningApp, custom_id: str, status: str) -> list[DeliveryAttempt]:
    async def there() -> bool:
        return (await delivery_trail(app, custom_id))[0] == status

    await wait_until(there, timeout=30, what=f"delivery of {custom_id} {status}")
    return (await delivery_trail(app, custom_id))[1]


async def assert_never_declared(amqp: Amqp, queue: str) -> None:
    # A failed passive declare closes its channel: probe on a channel of its own.
    async with await amqp.connection.channel() as probe:
        with pytest.raises(ChannelNotFoundEntity):
            await probe.declare_queue(queue, passive=True)


@pytest.mark.rabbitmq
async def test_destinations_outside_the_lists_are_refused_by_every_face(
    sqlite_url: str, inference: InferenceStandin, amqp: Amqp, start_app: StartApp
) -> None:
    intake, outside, allowed = amqp.name("intake"), amqp.name("outside"), amqp.name("allowed")
    settings = allow_listed(sqlite_url, inference, rabbitmq_input_queue=intake)
    async with start_app(settings) as app:
        # REST intake.
        answer = await app.client.post("/api/requests", json=request_payload("q", to_queue(outside)))
        assert answer.status_code == 422, answer.text
        [error] = answer.json()["errors"]
        assert (error["code"], error["source"]["pointer"]) == (
            "destination_not_allowed",
            "/delivery_config/rabbitmq_queue",
        )
        assert "RABBITMQ_DELIVERY_QUEUES" in error["detail"] and outside in error["detail"]
        to_exchange = {"type": "rabbitmq", "rabbitmq_exchange": "amq.topic", "routing_key": allowed}
        answer = await app.client.post("/api/requests", json=request_payload("x", to_exchange))
        assert answer.status_code == 422, answer.text
        [error] = answer.json()["errors"]
        assert error["source"]["pointer"] == "/delivery_config/rabbitmq_exchange"
        assert "RABBITMQ_DELIVERY_EXCHANGES" in error["detail"]

        # The RabbitMQ intake queue: dead-lettered with the same code (and a bad header too).
        await wait_until(lambda: app.consumer.consuming, timeout=15, what="the intake consumer")
        await amqp.publish(intake, request_payload("mq-q", to_queue(outside)))
        hooked = {"type": "webhook", "webhook_url": "https://example.com/h", "headers": {"Host": "x"}}
        await amqp.publish(intake, request_payload("mq-h", hooked))
        await wait_until(
            lambda: app.consumer.counts["dead_lettered"] == 2, timeout=15, what="two dead letters"
        )
        dead = await amqp.get_all(f"{intake}.dlq")
        codes = {json.loads(m.body)["custom_id"]: m.headers["x-batchgate-error-code"] for m in dead}
        assert codes == {"mq-q": "destination_not_allowed", "mq-h": "reserved_header"}

        # An allowed queue nobody declared yet is declared on first use and delivered to.
        answer = await app.client.post("/api/requests", json=request_payload("ok", to_queue(allowed)))
        assert answer.status_code == 202, answer.text
        [message] = await amqp.drain(allowed, until=1, timeout=30)
        assert json.loads(message.body)["custom_id"] == "ok"

        # The operator's edit is held to the same lists.
        async with app.db.transaction() as session:
            rid = await session.scalar(select(Request.id).where(Request.custom_id == "ok"))
        edited = await app.client.post(
            f"/requests/{rid}/delivery",
            data={"delivery_config": json.dumps(to_queue(outside))},
            headers={"HX-Request": "true"},
        )
        assert edited.status_code == 422 and "RABBITMQ_DELIVERY_QUEUES" in edited.text, edited.text
        assert await count_requests(app) == 1
    await assert_never_declared(amqp, outside)


async def count_requests(app: RunningApp) -> int:
    async with app.db.transaction() as session:
        return len((await session.scalars(select(Request.id))).all())


@pytest.mark.rabbitmq
async def test_a_list_tightened_after_intake_fails_the_delivery_and_declares_nothing(
    database_url: str, inference: InferenceStandin, amqp: Amqp, start_app: StartApp
) -> None:
    later = amqp.name("later")
    # Accepted while no list was set (and no pipeline ran) ...
    open_settings = allow_listed(
        database_url,
        None,
        rabbitmq_delivery_queues="",
        rabbitmq_delivery_exchanges="",
        scheduler_enabled=False,
    )
    async with start_app(open_settings) as app:
        answer = await app.client.post("/api/requests", json=request_payload("later", to_queue(later)))
        assert answer.status_code == 202, answer.text
    # ... then run and delivered with the list set: refused at send time, at once.
    async with start_app(allow_listed(database_url, inference)) as app:
        trail = await wait_status(app, "later", "delivery_failed")
        assert [a.outcome for a in trail] == ["permanent_failure"]
        assert trail[0].error == f"refused: queue '{later}' is not allowed by RABBITMQ_DELIVERY_QUEUES"
        detail = (await app.client.get("/api/requests/later")).json()
        assert "RABBITMQ_DELIVERY_QUEUES" in detail["delivery"]["last_error"]
    await assert_never_declared(amqp, later)


@pytest.mark.rabbitmq
async def test_an_allowed_queue_that_is_missing_with_declaring_off_ends_delivery_failed(
    sqlite_url: str, inference: InferenceStandin, amqp: Amqp, start_app: StartApp
) -> None:
    missing = amqp.name("allowed")
    settings = allow_listed(sqlite_url, inference, rabbitmq_declare_queues=False, delivery_max_attempts=2)
    async with start_app(settings) as app:
        answer = await app.client.post("/api/requests", json=request_payload("gone", to_queue(missing)))
        assert answer.status_code == 202, answer.text
        trail = await wait_status(app, "gone", "delivery_failed")
        assert [a.outcome for a in trail] == ["retryable_failure", "retryable_failure"]
        expected = (
            f"queue '{missing}' does not exist (RABBITMQ_DECLARE_QUEUES=false: Batchgate does not create it)"
        )
        assert [a.error for a in trail] == [expected, expected]
    await assert_never_declared(amqp, missing)


async def test_the_intake_queue_and_its_dead_letters_are_no_destination(
    sqlite_url: str, amqp: Amqp, start_app: StartApp
) -> None:
    # A result published to the intake queue came back in as a request (issue 29): refused, even
    # with no allow-list at all.
    intake = amqp.name("intake")
    settings = allow_listed(
        sqlite_url, None, rabbitmq_input_queue=intake, rabbitmq_delivery_queues="", scheduler_enabled=False
    )
    async with start_app(settings) as app:
        for n, queue in enumerate([intake, f"{intake}.dlq"]):
            answer = await app.client.post(
                "/api/requests", json=request_payload(f"loop-{n}", to_queue(queue))
            )
            assert answer.status_code == 422, answer.text
            [error] = answer.json()["errors"]
            assert error["code"] == "destination_not_allowed" and "intake queue" in error["detail"]
        fine = await app.client.post(
            "/api/requests", json=request_payload("fine", to_queue(amqp.name("results")))
        )
        assert fine.status_code == 202, fine.text
