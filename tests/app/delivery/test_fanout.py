"""Fan-out: a request's delivery_config may list several destinations. Each gets its own delivery
(its own id, attempts and status), signed per Standard Webhooks (verified here with the
`standardwebhooks` library), and one failing receiver never changes another's outcome. The
request's delivery status is delivered only once every destination is."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from testkit import RABBITMQ_URL, Amqp, RunningApp, StartApp, fast_settings, wait_until
from testkit.builders import request_payload, to_queue, webhook
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import Received, WebhookReceiver
from testkit.standins.serve import serve

SECRET = "whsec_" + base64.b64encode(b"fan-out results secret, 32 bytes").decode()


def verified(received: Received) -> Any:
    """The payload, once its signature is checked against SECRET (raises otherwise)."""
    return Webhook(SECRET).verify(received.body, received.headers)


async def request_json(app: RunningApp, custom_id: str) -> dict[str, Any]:
    answer = await app.client.get(f"/api/requests/{custom_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def ended(app: RunningApp, custom_id: str, count: int) -> dict[str, Any]:
    """The request once each of its `count` deliveries has ended (delivered or failed)."""
    found: dict[str, Any] = {}

    async def check() -> bool:
        found.update(await request_json(app, custom_id))
        statuses = [d["status"] for d in found["deliveries"]]
        return len(statuses) == count and all(s in ("delivered", "delivery_failed") for s in statuses)

    await wait_until(check, timeout=20, what=f"{count} deliveries of {custom_id} ended")
    return found


async def test_each_destination_has_its_own_delivery_attempts_and_status(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    other = WebhookReceiver()
    receiver.fail_first["fan-1"] = 1  # the first destination succeeds at its second attempt
    other.status_for["fan-1"] = 410  # the second refuses for good
    settings = fast_settings(database_url, inference.url + "/v1", webhook_secret=SECRET)
    async with serve(other) as other_url, start_app(settings) as app:
        targets = [webhook(receiver.url + "/a"), webhook(other_url + "/b")]
        answer = await app.client.post("/api/requests", json=request_payload("fan-1", targets))
        assert answer.status_code == 202, answer.text
        request = await ended(app, "fan-1", 2)

        first, second = request["deliveries"]
        assert first["id"] != second["id"]
        assert first["target"]["webhook_url"] == receiver.url + "/a"
        assert (first["status"], first["attempts"], len(first["attempt_log"])) == ("delivered", 2, 2)
        assert (second["status"], second["attempts"], len(second["attempt_log"])) == ("delivery_failed", 1, 1)
        # Honest: not delivered while one destination failed; the config is echoed as given.
        assert request["delivery_status"] == "delivery_failed"
        assert request["delivery_config"] == targets

        # Each receiver saw its own delivery id, signed, carrying the same result line.
        a = [r for r in receiver.received if r.path == "/a"]
        b = [r for r in other.received if r.path == "/b"]
        assert [r.status for r in a] == [500, 200] and [r.status for r in b] == [410]
        assert {r.headers["webhook-id"] for r in a} == {first["id"]}
        assert {r.headers["webhook-id"] for r in b} == {second["id"]}
        assert verified(a[-1])["custom_id"] == verified(b[0])["custom_id"] == "fan-1"

        listed = (await app.client.get("/api/requests", params={"custom_id": "fan-1"})).json()["data"]
        assert [(r["delivery_status"], r["delivery_attempts"]) for r in listed] == [("delivery_failed", 3)]
        page = await app.client.get(f"/requests/{request['id']}")
        assert f'id="delivery-{first["id"]}"' in page.text and f'id="delivery-{second["id"]}"' in page.text

        # Redelivering one destination leaves the other alone.
        other.status_for.clear()
        again = await app.client.post("/api/requests/fan-1/redeliver", params={"delivery_id": second["id"]})
        assert again.status_code == 202 and again.json()["id"] == second["id"], again.text

        async def all_delivered() -> bool:
            return (await request_json(app, "fan-1"))["delivery_status"] == "delivered"

        await wait_until(all_delivered, timeout=20, what="the second destination delivered on redeliver")
        assert len([r for r in receiver.received if r.path == "/a"]) == 2  # not sent again
        assert verified(other.received[-1])["custom_id"] == "fan-1"

        # Redelivering the request sends to every destination again.
        everyone = await app.client.post("/api/requests/fan-1/redeliver")
        assert everyone.status_code == 202, everyone.text
        await receiver.wait_for(lambda r: len([x for x in r.received if x.path == "/a"]) == 3)
        await other.wait_for(lambda r: len(r.successes()) == 2)


async def test_bulk_fans_out_and_refuses_too_many_or_repeated_destinations(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", webhook_secret=SECRET)
    async with start_app(settings) as app:
        good = [webhook(receiver.url + "/one"), webhook(receiver.url + "/two")]
        eleven = [webhook(f"{receiver.url}/{n}") for n in range(11)]
        repeated = [webhook(receiver.url + "/same"), webhook(receiver.url + "/same")]
        items = [
            request_payload("bulk-good", good),
            request_payload("bulk-eleven", eleven),
            request_payload("bulk-repeated", repeated),
            request_payload("bulk-none", [{"type": "none"}]),
            request_payload("bulk-empty", []),
        ]
        answer = await app.client.post("/api/requests/bulk", json=items)
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert results[0]["status"] == "pending"
        codes = [[(e["code"], e["source"]["pointer"]) for e in r["errors"]] for r in results[1:]]
        assert codes == [
            [("too_many_destinations", "/1/delivery_config")],
            [("duplicate_destination", "/2/delivery_config")],
            [("invalid_delivery_type", "/3/delivery_config/0")],
            [("invalid_delivery_type", "/4/delivery_config")],
        ]
        # The single route refuses alike, with the message saying the limit.
        single = await app.client.post("/api/requests", json=request_payload("one-eleven", eleven))
        assert single.status_code == 422
        [error] = single.json()["errors"]
        assert error["code"] == "too_many_destinations" and "at most 10" in error["detail"]
        # Each entry is checked like a single destination: the SSRF guard names the entry.
        metadata = [webhook(receiver.url + "/ok"), webhook("http://169.254.169.254/latest")]
        refused = await app.client.post("/api/requests", json=request_payload("one-ssrf", metadata))
        assert refused.status_code == 422
        assert [(e["code"], e["source"]["pointer"]) for e in refused.json()["errors"]] == [
            ("invalid_webhook_url", "/delivery_config/1/webhook_url")
        ]

        request = await ended(app, "bulk-good", 2)
        assert request["delivery_status"] == "delivered"
        paths = sorted(r.path for r in receiver.successes("bulk-good"))
        assert paths == ["/one", "/two"]
        assert len({r.headers["webhook-id"] for r in receiver.successes("bulk-good")}) == 2
        for received in receiver.successes("bulk-good"):
            verified(received)


@pytest.mark.rabbitmq
async def test_a_request_from_the_intake_queue_fans_out_to_a_webhook_and_a_queue(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, amqp: Amqp, start_app: StartApp
) -> None:
    intake, results = amqp.name("intake"), amqp.name("results")
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        webhook_secret=SECRET,
        rabbitmq_url=RABBITMQ_URL,
        rabbitmq_input_queue=intake,
    )
    async with start_app(settings) as app:
        await wait_until(lambda: app.consumer.consuming, timeout=15, what="the intake consumer to start")
        await amqp.publish(
            intake, request_payload("mq-fan", [webhook(receiver.url + "/hook"), to_queue(results)])
        )
        [message] = await amqp.drain(results, until=1, timeout=30)
        request = await ended(app, "mq-fan", 2)
    [hooked] = receiver.answered("/hook")
    assert verified(hooked)["custom_id"] == json.loads(message.body)["custom_id"] == "mq-fan"
    by_channel = {d["channel"]: d for d in request["deliveries"]}
    assert by_channel["rabbitmq"]["id"] == message.message_id != hooked.headers["webhook-id"]
    assert hooked.headers["webhook-id"] == by_channel["webhook"]["id"]
    assert request["delivery_status"] == "delivered" and request["origin"] == "rabbitmq"
