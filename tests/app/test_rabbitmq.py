"""RabbitMQ intake and delivery against the real broker on 127.0.0.1:5672."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from app.core import delivery as deliveries
from app.db.models import Delivery, DeliveryAttempt, Request
from app.net.broker import BackoffConnection
from testkit import (
    PG_HOST,
    PG_PORT,
    RABBITMQ_URL,
    Amqp,
    RunningApp,
    StartApp,
    check,
    close_connections,
    database_name,
    fast_settings,
    migrate,
    postgres_database,
    postgres_url,
    rabbitmqctl_available,
    request_payload,
    require_service,
    to_queue,
    wait_until,
)
from testkit.standins.inference import InferenceStandin
from testkit.standins.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbitmq


def rabbit_settings(
    database_url: str, inference: InferenceStandin | None, queue: str, **overrides: Any
) -> Any:
    return fast_settings(
        database_url,
        inference.url + "/v1" if inference else "http://127.0.0.1:9/v1",
        rabbitmq_url=RABBITMQ_URL,
        rabbitmq_input_queue=queue,
        rabbitmq_requeue_delay_seconds=0.2,
        **overrides,
    )


async def consuming(app: RunningApp) -> None:
    await wait_until(lambda: app.consumer.consuming, timeout=15, what="the intake consumer to start")


async def count(app: RunningApp, *where: Any) -> int:
    async with app.db.transaction() as session:
        return await session.scalar(select(func.count()).select_from(Request).where(*where)) or 0


async def delivery_states(app: RunningApp) -> dict[str, int]:
    async with app.db.transaction() as session:
        rows = await session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return dict(rows.all())  # type: ignore[arg-type]


async def attempts(app: RunningApp) -> list[DeliveryAttempt]:
    async with app.db.transaction() as session:
        return list((await session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id))).all())


async def test_published_requests_come_back_on_the_result_queue_exactly_once(
    database_url: str, inference: InferenceStandin, amqp: Amqp, start_app: StartApp
) -> None:
    intake, results = amqp.name("intake"), amqp.name("results")
    total = 1000
    settings = rabbit_settings(database_url, inference, intake, local_concurrency=32)
    async with start_app(settings) as app:
        await consuming(app)
        for i in range(total):
            await amqp.publish(intake, request_payload(f"mq-{i}", to_queue(results)))

        async def all_accepted() -> bool:
            return await count(app, Request.origin == "rabbitmq") == total

        await wait_until(all_accepted, timeout=90, what=f"{total} requests accepted from the queue")
        received = await amqp.drain(results, until=total, timeout=120)

        async def all_delivered() -> bool:
            return await delivery_states(app) == {"delivered": total}

        await wait_until(all_delivered, timeout=30, what="every delivery recorded as delivered")
        assert app.consumer.counts == {"accepted": total, "duplicate": 0, "dead_lettered": 0, "requeued": 0}
    # With the gateway gone, anything it had not acked would be back in the queue.
    assert await amqp.count(intake) == 0
    assert await amqp.count(f"{intake}.dlq") == 0
    assert await amqp.count(results) == 0

    assert len(received) == total, "a result was published twice"
    assert len({m.message_id for m in received}) == total
    first = received[0]
    line = json.loads(first.body)
    assert first.content_type == "application/json"
    assert first.delivery_mode == 2  # persistent
    assert first.message_id.startswith("dlv_")
    assert first.headers["x-batchgate-custom-id"] == line["custom_id"]
    assert first.headers["x-batchgate-attempt"] == 1
    assert line["response"]["status_code"] == 200 and line["error"] is None
    assert {json.loads(m.body)["custom_id"] for m in received} == {f"mq-{i}" for i in range(total)}


async def test_bad_messages_are_dead_lettered_with_a_reason_and_never_redelivered(
    sqlite_url: str, amqp: Amqp, start_app: StartApp
) -> None:
    intake = amqp.name("intake")
    bad = {
        "not-json": b"{this is not json",
        "schema": request_payload("no-model", {"type": "none"}) | {"body": {"messages": []}},
        "webhook": request_payload("bad-hook", {"type": "webhook", "webhook_url": "ftp://example.com/x"}),
        "huge": request_payload("huge", {"type": "none"}, user="x" * 2000),
    }
    async with start_app(rabbit_settings(sqlite_url, None, intake, api_max_body_bytes=1024)) as app:
        await consuming(app)
        for label, body in bad.items():
            await amqp.publish(intake, body, message_id=label, headers={"x-user": label})
        await amqp.publish(intake, request_payload("good", {"type": "none"}))

        async def settled() -> bool:
            return app.consumer.counts["dead_lettered"] == 4 and app.consumer.counts["accepted"] == 1

        await wait_until(settled, timeout=15, what="4 dead letters and 1 accepted request")
        assert await count(app) == 1
    assert await amqp.count(intake) == 0
    dead = {m.message_id: m for m in await amqp.get_all(f"{intake}.dlq")}
    assert set(dead) == set(bad), "each bad message is dead-lettered exactly once"
    assert dead["not-json"].headers["x-batchgate-error-code"] == "invalid_json"
    assert dead["schema"].headers["x-batchgate-error-code"] == "missing_model"
    assert "/body/model" in dead["schema"].headers["x-batchgate-error"]
    assert dead["webhook"].headers["x-batchgate-error-code"] == "invalid_webhook_url"
    assert "http" in dead["webhook"].headers["x-batchgate-error"]
    assert dead["huge"].headers["x-batchgate-error-code"] == "body_too_large"
    for label, message in dead.items():
        assert message.body == (
            bad[label] if isinstance(bad[label], bytes) else json.dumps(bad[label]).encode()
        )
        assert message.headers["x-user"] == label  # the publisher's own headers survive
        assert message.headers["x-batchgate-source-queue"] == intake


async def test_an_existing_intake_queue_without_dead_lettering_is_used_as_it_is(
    sqlite_url: str, amqp: Amqp, start_app: StartApp
) -> None:
    intake = amqp.name("intake")
    await amqp.channel.declare_queue(intake, durable=True)  # made by someone else, no DLX arguments
    async with start_app(rabbit_settings(sqlite_url, None, intake)) as app:
        await consuming(app)
        await amqp.publish(intake, b"not json", message_id="bad")
        await amqp.publish(intake, request_payload("ok", {"type": "none"}))

        async def settled() -> bool:
            return app.consumer.counts["dead_lettered"] == 1 and app.consumer.counts["accepted"] == 1

        await wait_until(settled, timeout=15, what="1 dead letter and 1 accepted request")
    [dead] = await amqp.get_all(f"{intake}.dlq")
    assert dead.headers["x-batchgate-error-code"] == "invalid_json"


async def test_a_duplicate_custom_id_is_acked_not_dead_lettered(
    sqlite_url: str, amqp: Amqp, start_app: StartApp
) -> None:
    intake = amqp.name("intake")
    async with start_app(rabbit_settings(sqlite_url, None, intake)) as app:
        await consuming(app)
        await amqp.publish(intake, request_payload("twice", {"type": "none"}))
        await amqp.publish(intake, request_payload("twice", {"type": "none"}))

        async def settled() -> bool:
            return app.consumer.counts["accepted"] + app.consumer.counts["duplicate"] == 2

        await wait_until(settled, timeout=15, what="both messages handled")
        assert app.consumer.counts == {"accepted": 1, "duplicate": 1, "dead_lettered": 0, "requeued": 0}
        assert await count(app) == 1
    assert await amqp.count(intake) == 0
    assert await amqp.count(f"{intake}.dlq") == 0


async def test_a_different_request_under_a_taken_custom_id_is_dead_lettered(
    database_url: str, amqp: Amqp, start_app: StartApp
) -> None:
    intake = amqp.name("intake")
    async with start_app(rabbit_settings(database_url, None, intake)) as app:
        await consuming(app)
        await amqp.publish(intake, request_payload("taken", {"type": "none"}))
        await wait_until(lambda: app.consumer.counts["accepted"] == 1, timeout=15, what="the first accepted")
        # The same id with another prompt is a client's mistake: kept, with the reason, not acked away.
        await amqp.publish(intake, request_payload("taken", {"type": "none"}, temperature=0.5))
        await amqp.publish(intake, request_payload("taken", {"type": "none"}))  # a true resend

        async def settled() -> bool:
            counts = app.consumer.counts
            return counts["dead_lettered"] == 1 and counts["duplicate"] == 1

        await wait_until(settled, timeout=15, what="one dead letter and one resend")
        assert await count(app) == 1
    [dead] = await amqp.get_all(f"{intake}.dlq")
    assert dead.headers["x-batchgate-error-code"] == "duplicate_custom_id"
    assert "different request" in dead.headers["x-batchgate-error"]


async def test_delivery_to_an_exchange_with_a_routing_key(
    sqlite_url: str, inference: InferenceStandin, amqp: Amqp, start_app: StartApp
) -> None:
    exchange = await amqp.exchange("results", "direct")
    wanted, other = amqp.name("wanted"), amqp.name("other")
    for queue, key in ((wanted, "results.eu"), (other, "results.us")):
        declared = await amqp.channel.declare_queue(queue, durable=True)
        await declared.bind(exchange, key)
    settings = rabbit_settings(sqlite_url, inference, "")
    async with start_app(settings) as app:
        target = {"type": "rabbitmq", "rabbitmq_exchange": exchange, "routing_key": "results.eu"}
        answer = await app.client.post("/api/requests", json=request_payload("routed", target))
        assert answer.status_code == 202, answer.text
        [message] = await amqp.drain(wanted, until=1, timeout=30)
    assert json.loads(message.body)["custom_id"] == "routed"
    assert await amqp.count(other) == 0


async def test_a_missing_queue_is_declared_durable_on_first_use(
    sqlite_url: str, inference: InferenceStandin, amqp: Amqp, start_app: StartApp
) -> None:
    results = amqp.name("fresh")  # nobody has declared it
    async with start_app(rabbit_settings(sqlite_url, inference, "")) as app:
        answer = await app.client.post("/api/requests", json=request_payload("fresh", to_queue(results)))
        assert answer.status_code == 202, answer.text

        async def delivered() -> bool:
            return await delivery_states(app) == {"delivered": 1}

        await wait_until(delivered, timeout=30, what="the delivery")
    # A passive declare of a durable queue with durable=False would fail; this one must match.
    queue = await amqp.channel.declare_queue(results, durable=True)
    assert queue.declaration_result.message_count == 1


@pytest.mark.parametrize("case", ["unroutable", "missing_queue"])
async def test_an_undeliverable_message_is_a_failed_attempt_not_a_silent_drop(
    case: str, sqlite_url: str, inference: InferenceStandin, amqp: Amqp, start_app: StartApp
) -> None:
    if case == "unroutable":
        target = {"type": "rabbitmq", "rabbitmq_exchange": await amqp.exchange("nobody"), "routing_key": "x"}
        expected = "unroutable"
    else:
        target = to_queue(amqp.name("absent"))
        expected = "does not exist"
    settings = rabbit_settings(
        sqlite_url, inference, "", delivery_max_attempts=2, rabbitmq_declare_queues=False
    )
    async with start_app(settings) as app:
        answer = await app.client.post("/api/requests", json=request_payload("lost", target))
        assert answer.status_code == 202, answer.text

        async def failed() -> bool:
            return await delivery_states(app) == {"delivery_failed": 1}

        await wait_until(failed, timeout=30, what="the delivery to fail")
        trail = await attempts(app)
        assert [a.outcome for a in trail] == ["retryable_failure", "retryable_failure"]
        assert all(expected in (a.error or "") for a in trail), [a.error for a in trail]
        # The publishing channel survived the failures: a good target still works.
        good = amqp.name("good")
        await amqp.channel.declare_queue(good, durable=True)
        answer = await app.client.post("/api/requests", json=request_payload("fine", to_queue(good)))
        assert answer.status_code == 202
        await amqp.drain(good, until=1, timeout=30)


async def test_broker_connections_closed_mid_run_lose_nothing(
    database_url: str, inference: InferenceStandin, amqp: Amqp, start_app: StartApp
) -> None:
    require_service("rabbitmqctl (to close connections from the broker side)", rabbitmqctl_available())
    intake, results = amqp.name("intake"), amqp.name("results")
    before, after = 300, 100
    total = before + after
    settings = rabbit_settings(
        database_url, inference, intake, local_concurrency=8, rabbitmq_intake_concurrency=4
    )
    async with start_app(settings) as app:
        await consuming(app)
        for i in range(before):
            await amqp.publish(intake, request_payload(f"kill-{i}", to_queue(results)))

        async def some_delivered() -> bool:
            return (await delivery_states(app)).get("delivered", 0) >= 20

        await wait_until(some_delivered, timeout=60, what="the first deliveries")
        label = app.broker.intake.name.rsplit(" ", 1)[0]  # both connections of this gateway
        assert await close_connections(label) == 2

        async def reconnected() -> bool:
            # aio-pika reconnects within milliseconds, so the outage shows as the last error.
            health = (await app.client.get("/health")).json()["rabbitmq"]
            return (
                health["state"] == "connected"
                and health["consuming"]
                and all(
                    "CONNECTION_FORCED" in (c["last_error"] or "") for c in health["connections"].values()
                )
            )

        await wait_until(reconnected, timeout=30, what="both connections to come back")
        # The consumer itself was restored, not only the connection.
        for i in range(before, total):
            await amqp.publish(intake, request_payload(f"kill-{i}", to_queue(results)))
        received = await amqp.drain(results, until=total, timeout=120)

        async def all_delivered() -> bool:
            return await delivery_states(app) == {"delivered": total}

        await wait_until(all_delivered, timeout=60, what="every delivery recorded as delivered")
        assert await count(app) == total
    assert await amqp.count(intake) == 0
    assert {json.loads(m.body)["custom_id"] for m in received} == {f"kill-{i}" for i in range(total)}


async def test_health_reports_the_broker(sqlite_url: str, amqp: Amqp, start_app: StartApp) -> None:
    intake = amqp.name("intake")
    async with start_app(rabbit_settings(sqlite_url, None, intake)) as app:
        await consuming(app)
        answer = await app.client.get("/health")
        assert answer.status_code == 200
        rabbitmq = answer.json()["rabbitmq"]
        assert rabbitmq["state"] == "connected"
        assert rabbitmq["host"] == "127.0.0.1:5672 vhost /"
        assert rabbitmq["intake_queue"] == intake
        assert rabbitmq["consuming"] is True
        assert set(rabbitmq["connections"]) == {"intake", "publish"}
        assert "guest" not in answer.text  # no credentials
        check(
            (await app.client.get("/api/openapi.json")).json(), "/health", "get", answer
        )  # the documented shape


def test_reconnect_pauses_grow_with_the_outage_up_to_the_cap() -> None:
    connection = BackoffConnection.__new__(BackoffConnection)  # the property needs no connection
    connection.max_interval = 30.0
    connection.down_since = None
    assert connection.reconnect_interval == 1.0
    connection.down_since = time.monotonic() - 1
    assert connection.reconnect_interval == 1.0
    connection.down_since = time.monotonic() - 20
    assert 9.9 < connection.reconnect_interval <= 10.1
    connection.down_since = time.monotonic() - 3600
    assert connection.reconnect_interval == 30.0


async def test_an_unreachable_broker_keeps_rest_working_and_deliveries_waiting(
    sqlite_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    settings = fast_settings(
        sqlite_url,
        inference.url + "/v1",
        rabbitmq_url="amqp://guest:guest@127.0.0.1:9/",
        rabbitmq_input_queue="x",
    )
    async with start_app(settings) as app:
        answer = await app.client.post("/api/requests", json=request_payload("waits", to_queue("somewhere")))
        assert answer.status_code == 202, answer.text

        async def finished() -> bool:
            return await count(app, Request.status == "succeeded") == 1

        await wait_until(finished, timeout=30, what="inference to finish")

        async def error_shown() -> bool:
            rabbitmq = (await app.client.get("/health")).json()["rabbitmq"]
            return rabbitmq["state"] == "connecting" and "Connect" in (rabbitmq["last_error"] or "")

        await wait_until(error_shown, timeout=15, what="the connection error on /health")
        health = await app.client.get("/health")
        assert health.status_code == 200
        # The delivery waits for the broker, unclaimed, without spending attempts.
        assert await deliveries.claim_due(app.db, "test", app.settings, app.worker.channels, 10) == []
        assert await delivery_states(app) == {"pending": 1}
        assert await attempts(app) == []


async def test_rabbitmq_delivery_is_refused_when_rabbitmq_is_not_configured(
    sqlite_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(sqlite_url)) as app:
        answer = await app.client.post("/api/requests", json=request_payload("nope", to_queue("q")))
    assert answer.status_code == 422
    [error] = answer.json()["errors"]
    assert error["code"] == "rabbitmq_not_configured"
    assert error["source"] == {"pointer": "/delivery_config/type"}
    assert "RABBITMQ_URL" in error["detail"]


@pytest.mark.parametrize(
    "target",
    [
        {"type": "rabbitmq"},
        {"type": "rabbitmq", "rabbitmq_queue": "q", "rabbitmq_exchange": "x"},
        {"type": "rabbitmq", "rabbitmq_queue": "q", "routing_key": "k"},
        {"type": "rabbitmq", "rabbitmq_queue": "q" * 256},
        {"type": "rabbitmq", "rabbitmq_queue": ""},
    ],
)
async def test_invalid_rabbitmq_targets_are_422(
    target: dict[str, Any], sqlite_url: str, start_app: StartApp
) -> None:
    async with start_app(
        fast_settings(sqlite_url, rabbitmq_url=RABBITMQ_URL, rabbitmq_input_queue="")
    ) as app:
        answer = await app.client.post("/api/requests", json=request_payload("bad-target", target))
    assert answer.status_code == 422, answer.text
    codes = {e["code"] for e in answer.json()["errors"]}
    assert codes == {"invalid_rabbitmq_target"}, answer.text
    assert all(e["source"]["pointer"].startswith("/delivery_config") for e in answer.json()["errors"])


async def test_a_database_outage_requeues_messages_until_it_is_back(
    inference: InferenceStandin, amqp: Amqp, start_app: StartApp
) -> None:
    async with postgres_database() as direct_url:
        await migrate(direct_url)
        async with TcpProxy(PG_HOST, PG_PORT) as proxy:
            proxied = postgres_url(database_name(direct_url), "127.0.0.1", proxy.port)
            intake = amqp.name("intake")
            async with start_app(rabbit_settings(proxied, inference, intake)) as app:
                await consuming(app)
                await proxy.pause()  # the database is gone: refused connections, dropped sockets
                await amqp.publish(intake, request_payload("survivor", {"type": "none"}))

                async def requeued_twice() -> bool:
                    return app.consumer.counts["requeued"] >= 2

                await wait_until(requeued_twice, timeout=30, what="the message to be requeued")
                assert app.consumer.counts["dead_lettered"] == 0
                await proxy.resume()

                async def accepted() -> bool:
                    return app.consumer.counts["accepted"] == 1

                await wait_until(accepted, timeout=30, what="the message to be accepted after the outage")
                assert await count(app, Request.custom_id == "survivor") == 1
            assert await amqp.count(intake) == 0
            assert await amqp.count(f"{intake}.dlq") == 0
