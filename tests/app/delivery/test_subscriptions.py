"""Event subscriptions (/api/subscriptions): the operator subscribes a webhook URL to event types
with filters on model, backend and origin; each matching event is delivered through the outbox,
signed per Standard Webhooks (verified with the `standardwebhooks` library), and nothing else is.
"""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from app.core import subscriptions
from app.db.models import Delivery
from testkit import NO_DELIVERY, StartApp, fast_settings, request_payload, wait_until
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"subscriptions secret, 32 bytes!!").decode()


async def test_events_reach_the_subscriptions_whose_types_and_filters_match(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    inference.status_for["sub-bad"] = 400
    async with start_app(fast_settings(database_url, inference.url + "/v1", webhook_secret=SECRET)) as app:

        async def subscribe(path: str, types: list[str], **filters: list[str]) -> dict[str, Any]:
            body = {"url": receiver.url + path, "event_types": types, "filters": filters}
            answer = await app.client.post("/api/subscriptions", json=body)
            assert answer.status_code == 201, answer.text
            return answer.json()  # type: ignore[no-any-return]

        failed = await subscribe("/failed", ["request.failed"], model=["stand-in"])
        other = await subscribe("/other-model", ["request.*"], model=["another-model"])
        batches = await subscribe("/batches", ["batch.*"], origin=["api"])
        for custom_id in ("sub-ok", "sub-bad"):
            answer = await app.client.post("/api/requests", json=request_payload(custom_id, NO_DELIVERY))
            assert answer.status_code == 202, answer.text

        await receiver.wait_for(lambda r: len(r.answered("/failed")) == 1)
        await receiver.wait_for(
            lambda r: "batch.completed" in [e.json["type"] for e in r.answered("/batches")]
        )
        [event] = [Webhook(SECRET).verify(r.body, r.headers) for r in receiver.answered("/failed")]
        assert (event["type"], event["data"]["custom_id"], event["data"]["status"]) == (
            "request.failed",
            "sub-bad",
            "failed",
        )
        assert event["data"]["model"] == "stand-in" and event["data"]["origin"] == "api"
        types = [Webhook(SECRET).verify(r.body, r.headers)["type"] for r in receiver.answered("/batches")]
        assert types[0] == "batch.created" and types[-1] == "batch.completed"

        async with app.db.transaction() as session:
            queued = (await session.execute(select(Delivery.subscription_id, Delivery.target))).all()
        by_subscription = [row.subscription_id for row in queued]
        # No event matched the other model's filter; the succeeded request matched no type.
        assert other["id"] not in by_subscription
        assert by_subscription.count(failed["id"]) == 1
        assert all(
            row.target["event"]["type"].startswith("batch.")
            for row in queued
            if row.subscription_id == batches["id"]
        )
        # Requests' pages show their results' deliveries only, not their events.
        assert (await app.client.get("/api/requests/sub-bad")).json()["deliveries"] == []

        # Disabled, a subscription takes no more events; deleted, it is gone with its deliveries.
        patched = await app.client.patch(f"/api/subscriptions/{failed['id']}", json={"enabled": False})
        assert patched.status_code == 200 and patched.json()["enabled"] is False
        assert patched.json()["filters"] == {"model": ["stand-in"]}
        async with app.db.transaction() as session:
            assert (
                await subscriptions.queue_event(session, "request.failed", {"x": 1}, {"model": "stand-in"})
                == 0
            )
            sent = await subscriptions.queue_event(session, "destination.paused", {"destination": "d"})
        assert sent == 0  # only batch.* and request.* subscriptions, none takes it
        page = await app.client.get("/subscriptions")
        assert f'data-subscription="{batches["id"]}"' in page.text
        assert (await app.client.delete(f"/api/subscriptions/{failed['id']}")).status_code == 204
        assert (await app.client.get(f"/api/subscriptions/{failed['id']}")).status_code == 404
        listed = (await app.client.get("/api/subscriptions")).json()["data"]
        assert [s["id"] for s in listed] == [other["id"], batches["id"]]


async def test_operational_events_and_refused_subscriptions(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1", webhook_secret=SECRET)) as app:
        bad = {
            "url": "http://169.254.169.254/x",
            "event_types": ["request.lost"],
            "filters": {"colour": ["red"]},
        }
        refused = await app.client.post("/api/subscriptions", json=bad)
        assert refused.status_code == 422
        codes = {(e["code"], e["source"]["pointer"]) for e in refused.json()["errors"]}
        assert codes == {
            ("invalid_webhook_url", "/url"),
            ("invalid_event_types", "/event_types"),
            ("invalid_filters", "/filters/colour"),
        }
        ops = {"url": receiver.url + "/ops", "event_types": ["destination.*", "delivery.exhausted"]}
        assert (await app.client.post("/api/subscriptions", json=ops)).status_code == 201

        # What the breaker calls when a destination pauses: queued in its transaction, to the
        # subscriptions that take it and to BATCH_EVENTS_WEBHOOK_URL when the caller passes it.
        paused = {"destination": "https://x:443"}
        async with app.db.transaction() as session:
            sent = await subscriptions.queue_event(
                session, "destination.paused", paused, batch_events_url=receiver.url + "/operator"
            )
        assert sent == 2
        app.worker.wake_deliver()
        for path in ("/ops", "/operator"):
            await receiver.wait_for(lambda r, path=path: len(r.answered(path)) == 1)
            [delivered] = receiver.answered(path)
            event = Webhook(SECRET).verify(delivered.body, delivered.headers)
            assert (event["type"], event["data"]) == ("destination.paused", paused)

        async def recorded() -> bool:
            async with app.db.transaction() as session:
                return list((await session.scalars(select(Delivery.status))).all()) == ["delivered"] * 2

        await wait_until(recorded, timeout=10, what="the events' deliveries recorded")
