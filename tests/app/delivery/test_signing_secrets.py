"""A webhook destination's own signing secret (issue 28, part 6): it signs instead of the global
one; a rotation keeps the replaced secret signing through its overlap (both signatures sent, each
verified by the `standardwebhooks` library as a receiver would); after the overlap only the new
one signs; clearing it falls back to the global one; reads never show a secret; bad input is a
4xx with a code and a message."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from app.core.destinations import rows
from app.db.models import Destination, DestinationEvent
from app.ground.clock import utcnow
from testkit import StartApp, check, fast_settings, signing
from testkit.signing import delivered, signatures
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import Received, WebhookReceiver

GLOBAL = "whsec_" + base64.b64encode(b"the-global-secret-of-this-test").decode()
OWN = "whsec_" + base64.b64encode(b"the-destinations-own-secret-0123").decode()


def verifies(secret: str, received: Received) -> bool:
    return signing.verifies(secret, received.body, received.headers)


async def test_own_secret_rotation_overlap_and_fallback(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", webhook_secret=GLOBAL)
    async with start_app(settings) as app:
        c = app.client
        got = await delivered(app, receiver, "before")
        assert verifies(GLOBAL, got) and len(signatures(got)) == 1

        # The first own secret, by the destination's URL (its row is made): the global one keeps
        # signing through the default overlap, so a receiver still on it goes on verifying.
        first = await c.post(
            "/api/destinations/secret/rotate", json={"destination": receiver.url, "secret": OWN}
        )
        assert first.status_code == 200, first.text
        assert first.headers["cache-control"] == "no-store"
        state = first.json()
        assert state["secret"] == OWN and state["signing_secret"] == "own"
        assert state["destination"] == "http://127.0.0.1:" + receiver.url.rsplit(":", 1)[1]
        assert state["secret_prefix"] == OWN[:10] and state["previous_secret"] == "global"
        until = state["previous_secret_until"]
        assert until is not None and until > (utcnow() + timedelta(hours=23)).isoformat()
        got = await delivered(app, receiver, "first")
        assert verifies(OWN, got) and verifies(GLOBAL, got) and len(signatures(got)) == 2

        # Rotated again, by id, to a generated secret: the replaced own one signs for an hour;
        # the global one no longer does.
        destination_id = state["destination_id"]
        second = await c.post(
            f"/api/destinations/{destination_id}/secret/rotate", json={"overlap_seconds": 3600}
        )
        assert second.status_code == 200, second.text
        new = second.json()["secret"]
        assert new.startswith("whsec_") and len(base64.b64decode(new[6:])) == 32 and new != OWN
        assert second.json()["previous_secret"] == "own"
        got = await delivered(app, receiver, "overlap")
        assert verifies(new, got) and verifies(OWN, got) and not verifies(GLOBAL, got)
        assert len(signatures(got)) == 2

        # Reads never show a secret again.
        read = await c.get(f"/api/destinations/{destination_id}/secret")
        assert read.status_code == 200, read.text
        assert read.json()["signing_secret"] == "own" and read.json()["secret_prefix"] == new[:10]
        for secret in (new, OWN, GLOBAL):
            assert secret not in read.text and secret[6:] not in read.text

        # The overlap ends (its end moved to the past, as time would): only the new one signs.
        async with app.db.transaction() as session:
            await session.execute(
                update(Destination)
                .where(Destination.id == destination_id)
                .values(previous_secret_until=utcnow() - timedelta(seconds=1))
            )
        got = await delivered(app, receiver, "after")
        assert verifies(new, got) and not verifies(OWN, got) and not verifies(GLOBAL, got)
        assert len(signatures(got)) == 1
        assert (await c.get(f"/api/destinations/{destination_id}/secret")).json()["previous_secret"] is None

        # Cleared: the global one signs again, alone (no overlap by default).
        cleared = await c.delete(f"/api/destinations/{destination_id}/secret")
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["signing_secret"] == "global" and cleared.json()["secret_prefix"] is None
        got = await delivered(app, receiver, "cleared")
        assert verifies(GLOBAL, got) and not verifies(new, got) and len(signatures(got)) == 1


async def test_clearing_with_an_overlap_and_batch_events_sign_like_results(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    """A destination's secret signs everything sent to it, batch events too (which otherwise use
    their own global secret); clearing it with an overlap keeps it signing meanwhile."""
    events_secret = "whsec_" + base64.b64encode(b"the-batch-events-secret-45678").decode()
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        webhook_secret=GLOBAL,
        batch_events_webhook_url=receiver.url + "/events",
        batch_events_webhook_secret=events_secret,
    )
    async with start_app(settings) as app:
        c = app.client
        body = {"destination": receiver.url + "/any/path?x=1", "secret": OWN, "overlap_seconds": 0}
        assert (await c.post("/api/destinations/secret/rotate", json=body)).status_code == 200
        got = await delivered(app, receiver, "own")
        assert verifies(OWN, got) and not verifies(GLOBAL, got)

        await receiver.wait_for(lambda r: any(x.path == "/events" for x in r.successes()), timeout=30)
        event = next(r for r in receiver.successes() if r.path == "/events")
        assert verifies(OWN, event) and not verifies(events_secret, event)

        cleared = await c.delete(
            "/api/destinations/secret", params={"destination": receiver.url, "overlap_seconds": 600}
        )
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["signing_secret"] == "global" and cleared.json()["previous_secret"] == "own"
        got = await delivered(app, receiver, "clearing")
        assert verifies(OWN, got) and verifies(GLOBAL, got) and len(signatures(got)) == 2


def problem(answer: Any) -> tuple[int, str, str]:
    error = answer.json()["errors"][0]
    assert error["detail"], answer.text  # a human message
    return answer.status_code, error["code"], (error.get("source") or {}).get("pointer")


async def test_bad_input_is_a_4xx_with_a_code_and_a_message(database_url: str, start_app: StartApp) -> None:
    settings = fast_settings(database_url, scheduler_enabled=False)
    async with start_app(settings) as app:
        c = app.client
        made = await c.post("/api/destinations/secret/rotate", json={"destination": "https://example.com"})
        assert made.status_code == 200, made.text
        assert made.json()["destination"] == "https://example.com:443"
        rotate = f"/api/destinations/{made.json()['destination_id']}/secret/rotate"
        short = "whsec_" + base64.b64encode(b"too short").decode()
        unpadded_junk = "whsec_not*base64!"
        cases = [
            (rotate, {"secret": "no-prefix" + OWN}, (422, "invalid_secret", "/secret")),
            (rotate, {"secret": unpadded_junk}, (422, "invalid_secret", "/secret")),
            (rotate, {"secret": short}, (422, "invalid_secret", "/secret")),
            (rotate, {"overlap_seconds": -1}, (422, "invalid_overlap", "/overlap_seconds")),
            (rotate, {"overlap_seconds": 31 * 86400}, (422, "invalid_overlap", "/overlap_seconds")),
            ("/api/destinations/999999/secret/rotate", {}, (404, "not_found", None)),
            (
                "/api/destinations/secret/rotate",
                {"destination": "rabbitmq:queue/q"},
                (422, "invalid_destination", "/destination"),
            ),
            (
                "/api/destinations/secret/rotate",
                {"destination": "https://"},
                (422, "invalid_destination", "/destination"),
            ),
        ]
        for path, body, expected in cases:
            answer = await c.post(path, json=body)
            assert problem(answer) == expected, (body, answer.text)
            assert "not*base64" not in answer.text and "too short" not in answer.text  # never echoed
        # Not JSON, a field of the wrong type, an unknown field (the destination given by id and
        # in the body too), no destination by key: 400.
        by_key = "/api/destinations/secret/rotate"
        for path, content in [
            *((rotate, body) for body in (b"{", b'{"secret": 5}', b'{"colour": "red"}')),
            (rotate, b'{"destination": "https://example.com"}'),
            (by_key, b"{}"),
        ]:
            answer = await c.post(path, content=content, headers={"content-type": "application/json"})
            assert answer.status_code == 400, answer.text
            assert (
                answer.json()["errors"][0]["code"] == "bad_request" and answer.json()["errors"][0]["detail"]
            )
        bad_clear = await c.delete(rotate.removesuffix("/rotate"), params={"overlap_seconds": -5})
        assert problem(bad_clear) == (422, "invalid_overlap", "/overlap_seconds")
        assert (await c.delete("/api/destinations/999999/secret")).status_code == 404
        assert (await c.get("/api/destinations/999999/secret")).status_code == 404

        # A RabbitMQ destination does not sign.
        async with app.db.transaction() as session:
            queue = await rows.locked(session, "rabbitmq:queue/results")
            queue_id = queue.id
        answer = await c.post(f"/api/destinations/{queue_id}/secret/rotate", json={})
        assert problem(answer) == (422, "not_a_webhook_destination", None)
        # Nothing refused changed the stored secret: the first rotation's generated one stays.
        state = (await c.get(rotate.removesuffix("/rotate"))).json()
        assert state["signing_secret"] == "own" and state["secret_prefix"] == made.json()["secret"][:10]
        # No body at all is a rotation with the defaults.
        bare = await c.post(rotate)
        assert bare.status_code == 200 and bare.json()["secret"] != made.json()["secret"], bare.text
        assert bare.json()["previous_secret"] == "own"
        # Each change is on the destination's timeline (its breaker state unchanged), no refusal is.
        async with app.db.transaction() as session:
            timeline = (
                await session.execute(
                    select(DestinationEvent.from_state, DestinationEvent.to_state, DestinationEvent.reason)
                    .where(DestinationEvent.destination_id == made.json()["destination_id"])
                    .order_by(DestinationEvent.id)
                )
            ).all()
        assert [(e.from_state, e.to_state) for e in timeline] == [("closed", "closed")] * 2
        assert timeline[0].reason.startswith("signing secret rotated (the global one signs too until ")
        assert timeline[1].reason.startswith("signing secret rotated (the one it replaced signs too until ")


async def test_answers_match_the_published_document(sqlite_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        c = app.client
        document = (await c.get("/api/openapi.json")).json()
        by_key, by_id = "/api/destinations/secret", "/api/destinations/{destination_id}/secret"
        made = await c.post(by_key + "/rotate", json={"destination": "https://example.com", "secret": OWN})
        check(document, by_key + "/rotate", "post", made, 200)
        one = f"/api/destinations/{made.json()['destination_id']}/secret"
        check(document, by_id + "/rotate", "post", await c.post(one + "/rotate"), 200)
        check(document, by_id, "get", await c.get(one), 200)
        check(document, by_id, "delete", await c.delete(one, params={"overlap_seconds": 60}), 200)
        cleared = await c.delete(by_key, params={"destination": "https://example.com"})
        check(document, by_key, "delete", cleared, 200)
        bad = await c.post(one + "/rotate", json={"secret": "whsec_"})
        check(document, by_id + "/rotate", "post", bad, 422, "invalid_secret")
        unknown = await c.post(one + "/rotate", json={"colour": "red"})
        check(document, by_id + "/rotate", "post", unknown, 400, "bad_request")
        missing = "/api/destinations/999999/secret"
        check(document, by_id, "get", await c.get(missing), 404, "not_found")
        check(document, by_id, "delete", await c.delete(missing), 404, "not_found")
        body = document["paths"][by_key + "/rotate"]["post"]["requestBody"]["content"]["application/json"]
        assert document["components"]["schemas"]["RotateByKeyIn"]["additionalProperties"] is False, body
