"""Per-destination health (issue 28, part 2): a circuit breaker that holds a failing destination's
deliveries (never drops them, counts no attempt while they wait), probes it with one after a
cool-down and closes on an answer; an operator's pause and resume; each move a destination event
row, announced signed to the batch events webhook, and shown on /health and /metrics."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from app.db.models import DestinationEvent
from testkit import RunningApp, StartApp, fast_settings, wait_until
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import Received, WebhookReceiver
from testkit.standins.serve import serve

SECRET = "whsec_" + base64.b64encode(b"destination events secret 32 b!!").decode()
FAILURES = 3


def notices(receiver: WebhookReceiver, kind: str) -> list[Received]:
    """The operational events of `kind` the events receiver got, each verified as signed."""
    found = [r for r in receiver.received if r.path == "/events" and r.json["type"] == kind]
    for received in found:
        Webhook(SECRET).verify(received.body, received.headers)
    return found


async def destination(app: RunningApp, origin: str) -> dict[str, Any]:
    listed = (await app.client.get("/api/destinations")).json()["data"]
    return next((d for d in listed if d["destination"] == origin), {"breaker": None, "id": None})


async def delivery_states(app: RunningApp, custom_ids: list[str]) -> list[dict[str, Any]]:
    states = []
    for custom_id in custom_ids:
        answer = (await app.client.get(f"/api/requests/{custom_id}")).json()
        states.append(answer["delivery"] or {"status": None, "attempts": 0})
    return states


async def test_a_failing_destination_is_held_probed_and_resumed(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    down = WebhookReceiver()
    down.down_status = 503
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        delivery_breaker_failures=FAILURES,
        delivery_breaker_cooldown_seconds=0.5,
        delivery_max_attempts=100,  # none ends failed: held deliveries must all arrive in the end
        delivery_destination_concurrency=2,
        batch_events_webhook_url=receiver.url + "/events",
        batch_events_webhook_secret=SECRET,
    )
    async with serve(down) as down_url, start_app(settings) as app:
        origin = down_url.rstrip("/")
        custom_ids = [f"held-{n}" for n in range(6)]
        for custom_id in custom_ids:
            assert (await app.submit(custom_id, down_url + "/hook")).status_code == 202

        async def opened() -> bool:
            return (await destination(app, origin))["breaker"] in ("open", "probing")

        await wait_until(opened, timeout=20, what="the breaker opened")
        attempts_at_open = len(down.received)
        health = (await app.client.get("/health")).json()
        assert [d["destination"] for d in health["held_destinations"]] == [origin]
        metrics = (await app.client.get("/metrics")).text
        assert f'batchgate_destination_held{{destination="{origin}"' in metrics

        # Held: over two failed probes (cool-downs of 0.5 s, then 1 s), only the probes and
        # what was already in flight reach it. Unheld, six deliveries retrying every 0.5 s at
        # most would make about twenty attempts meanwhile.
        async def probed_twice() -> bool:
            async with app.db.transaction() as session:
                rows = (await session.execute(select(DestinationEvent.to_state))).scalars().all()
            return rows.count("probing") >= 2 and rows[-1] == "open"

        await wait_until(probed_twice, timeout=20, what="two failed probes")
        assert len(down.received) - attempts_at_open <= 2 + 2  # in flight at the opening, probes

        down.down_status = None

        async def all_delivered() -> bool:
            return all(s["status"] == "delivered" for s in await delivery_states(app, custom_ids))

        await wait_until(all_delivered, timeout=30, what="every held delivery delivered")
        shown = await destination(app, origin)
        assert shown["breaker"] == "closed" and shown["consecutive_failures"] == 0
        detail = (await app.client.get(f"/api/destinations/{shown['id']}")).json()
        moves = [(e["from_state"], e["to_state"]) for e in reversed(detail["events"])]
        assert moves[0] == ("closed", "open") and moves[-1] == ("probing", "closed")
        assert ("open", "probing") in moves and ("probing", "open") in moves
        await receiver.wait_for(lambda r: bool(notices(r, "destination.resumed")), timeout=10)
        [paused] = notices(receiver, "destination.paused")
        assert paused.json["data"]["destination"] == origin
        assert "failed attempts in a row" in paused.json["data"]["reason"]

        async def health_clear() -> bool:  # /health's list is at most 5 s old
            return (await app.client.get("/health")).json()["held_destinations"] == []

        await wait_until(health_clear, timeout=10, what="/health to list no held destination")


async def test_an_operator_pauses_and_resumes_a_destination(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        batch_events_webhook_url=receiver.url + "/events",
        batch_events_webhook_secret=SECRET,
    )
    other = WebhookReceiver()
    async with serve(other) as other_url, start_app(settings) as app:
        origin = other_url.rstrip("/")
        made = await app.client.post("/api/destinations", json={"destination": other_url + "/any/path"})
        assert made.status_code == 200, made.text
        destination_id = made.json()["id"]
        assert made.json()["destination"] == origin
        paused = await app.client.post(f"/api/destinations/{destination_id}/pause")
        assert paused.json()["breaker"] == "open" and paused.json()["probe_at"] is None
        for n in range(3):
            assert (await app.submit(f"paused-{n}", other_url + "/hook")).status_code == 202
        # Deliveries elsewhere go on meanwhile; the paused ones wait, unattempted.
        assert (await app.submit("elsewhere", receiver.url + "/results")).status_code == 202
        await receiver.wait_for(lambda r: bool(r.successes("elsewhere")), timeout=20)

        async def queued() -> bool:
            return all(
                s["status"] == "pending"
                for s in await delivery_states(app, ["paused-0", "paused-1", "paused-2"])
            )

        await wait_until(queued, timeout=20, what="the paused destination's deliveries queued")
        assert other.received == []
        assert (await destination(app, origin))["waiting"] == 3

        resumed = await app.client.post(f"/api/destinations/{destination_id}/resume")
        assert resumed.json()["breaker"] == "closed"

        async def delivered() -> bool:
            states = await delivery_states(app, ["paused-0", "paused-1", "paused-2"])
            return all(s["status"] == "delivered" for s in states)

        await wait_until(delivered, timeout=20, what="the resumed deliveries delivered")
        assert len(other.received) == 3  # each once: nothing was attempted while paused
        await receiver.wait_for(lambda r: bool(notices(r, "destination.resumed")), timeout=10)
        assert "operator" in notices(receiver, "destination.paused")[0].json["data"]["reason"]


async def test_a_destination_limit_is_refused_when_out_of_range(sqlite_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(sqlite_url)) as app:
        cases = [
            (
                {"destination": "https://a.example", "concurrency": 0},
                "Expected `int` >= 1",
            ),
            ({"destination": "https://a.example", "rate_per_second": -1}, "Expected `float` >= 0"),
            ({"destination": "ftp://a.example"}, "Expected `str` matching regex"),
            ({"destination": "https://"}, "Expected `str` matching regex"),
        ]
        for body, said in cases:
            answer = await app.client.post("/api/destinations", json=body)
            assert answer.status_code == 400, (body, answer.text)
            [error] = answer.json()["errors"]
            assert error["code"] == "bad_request" and said in error["detail"], error
        assert (await app.client.post("/api/destinations", json={"bogus": 1})).status_code == 400
        assert (await app.client.post("/api/destinations/999999/pause")).status_code == 404
        assert (await app.client.get("/api/destinations/999999")).status_code == 404
        assert (await app.client.put("/api/destinations/999999/limits", json={})).status_code == 404


async def test_a_failed_delivery_is_announced_as_exhausted(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    receiver.status_for["gone"] = 410
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        batch_events_webhook_url=receiver.url + "/events",
        batch_events_webhook_secret=SECRET,
    )
    async with start_app(settings) as app:
        assert (await app.submit("gone", receiver.url + "/results")).status_code == 202
        await receiver.wait_for(lambda r: bool(notices(r, "delivery.exhausted")), timeout=20)
        [event] = notices(receiver, "delivery.exhausted")
        delivery = (await app.client.get("/api/requests/gone")).json()["delivery"]
        assert event.json["data"]["delivery_id"] == delivery["id"]
        assert event.json["data"]["custom_id"] == "gone" and event.json["data"]["attempts"] == 1
