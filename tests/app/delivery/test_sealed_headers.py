"""Webhook header values and destination signing secrets encrypted at rest with SECRETS_KEY
(issue 28, part 6): not in the database in clear, yet what the receiver gets; a resend is still
told from a different request; rows stored before a key was set keep working; a value no key
opens is never sent, and the delivery says why."""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy import select

from app.db.models import Batch, Delivery, DeliveryAttempt, Destination, Request
from testkit import RunningApp, StartApp, fast_settings, request_payload, wait_until
from testkit.signing import delivered, verifies
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

KEY, OTHER_KEY = (
    "JEDXcw0hIjwoTDE6Q8_4jSqPYIZdzUHy9a_1V3MnK4A=",
    "kWpx5kBXNRdcaTogplRXp6upfQsLLwCbA1OaHceKxqA=",
)
TOKEN = "Bearer receiver-token-5d1e9b"
OWN = "whsec_" + base64.b64encode(b"a-destination-secret-sealed-at-rest").decode()


def hooked(url: str) -> dict[str, Any]:
    return {"type": "webhook", "webhook_url": url, "headers": {"Authorization": TOKEN, "X-Tenant": "t1"}}


async def raw_rows(app: RunningApp, custom_id: str) -> tuple[str, str]:
    """requests.delivery and deliveries.target of a request, as stored (JSON text)."""
    async with app.db.transaction() as session:
        request = (
            await session.execute(select(Request.id, Request.delivery).where(Request.custom_id == custom_id))
        ).one()
        target = await session.scalar(select(Delivery.target).where(Delivery.request_id == request.id))
    return json.dumps(request.delivery), json.dumps(target)


async def delivery_state(app: RunningApp, custom_id: str) -> dict[str, Any]:
    return dict((await app.client.get(f"/api/requests/{custom_id}")).json()["delivery"] or {})


async def test_header_values_and_secrets_are_not_stored_in_clear_yet_arrive(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1", secrets_key=KEY)) as app:
        c = app.client
        own = {"destination": receiver.url, "secret": OWN}
        rotated = await c.post("/api/destinations/secret/rotate", json=own)
        assert rotated.status_code == 200 and rotated.json()["encrypted"] is True, rotated.text
        got = await delivered(app, receiver, "sealed/1", hooked(receiver.url + "/hook"))
        assert got.headers["authorization"] == TOKEN and got.headers["x-tenant"] == "t1"
        assert verifies(OWN, got.body, got.headers)
        body = request_payload("sealed/1", hooked(receiver.url + "/hook"))

        stored_request, stored_target = await raw_rows(app, "sealed/1")
        for stored in (stored_request, stored_target):
            assert "receiver-token" not in stored and '"t1"' not in stored
            assert stored.count('"enc:v1:') == 2  # both values, sealed
        async with app.db.transaction() as session:
            secret = await session.scalar(select(Destination.signing_secret))
        assert secret is not None and secret.startswith("enc:v1:") and OWN[6:] not in secret

        # Reads show neither the value nor its ciphertext.
        read = await c.get("/api/requests/sealed/1")
        assert "receiver-token" not in read.text and "enc:v1:" not in read.text
        assert read.json()["delivery_config"]["headers"] == {"Authorization": "••••", "X-Tenant": "••••"}

        # The same request again is a resend (sealing twice gives different bytes), a changed
        # value a different request; the bulk face tells them apart too.
        again = await c.post("/api/requests", json=body)
        assert again.status_code == 409 and "with a different request" not in again.text, again.text
        changed = request_payload(
            "sealed/1", {**hooked(receiver.url + "/hook"), "headers": {"Authorization": "x"}}
        )
        assert "with a different request" in (await c.post("/api/requests", json=changed)).text
        details = [
            (await c.post("/api/requests/bulk", json=[item])).json()["results"][0]["errors"][0]["detail"]
            for item in (body, changed)
        ]
        assert "different" not in details[0] and "with a different request" in details[1], details

        # A given value that looks sealed is refused: it could make Batchgate open another's.
        forged = request_payload("sealed/2", {**hooked(receiver.url), "headers": {"X-A": "enc:v1:gAAAA"}})
        refused = await c.post("/api/requests", json=forged)
        assert refused.status_code == 422 and refused.json()["errors"][0]["code"] == "invalid_header"


async def test_plain_rows_keep_working_and_an_unopenable_value_is_never_sent(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    plain = fast_settings(database_url, inference.url + "/v1")
    async with start_app(plain) as app:
        assert (
            await app.client.post("/api/requests", json=request_payload("old", hooked(receiver.url)))
        ).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes("old")) == 1, timeout=30)
        assert "receiver-token" in (await raw_rows(app, "old"))[0]  # no key: stored as given

    # A key set later: the plain row is still sent as it was; new rows are sealed.
    async with start_app(plain.model_copy(update={"secrets_key": f"{KEY},{OTHER_KEY}"})) as app:
        assert (await app.client.post("/api/requests/old/redeliver")).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes("old")) == 2, timeout=30)
        assert receiver.successes("old")[1].headers["authorization"] == TOKEN
        assert (
            await app.client.post("/api/requests", json=request_payload("new", hooked(receiver.url)))
        ).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes("new")) == 1, timeout=30)

    # The key changed, the old one kept second in the list: rows sealed with it still open.
    async with start_app(plain.model_copy(update={"secrets_key": f"{OTHER_KEY},{KEY}"})) as app:
        assert (await app.client.post("/api/requests/new/redeliver")).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes("new")) == 2, timeout=30)
        assert receiver.successes("new")[1].headers["authorization"] == TOKEN

    # No key opens it any more: never sent, retried, and the attempt says why.
    async with start_app(plain.model_copy(update={"secrets_key": OTHER_KEY})) as app:
        assert (await app.client.post("/api/requests/new/redeliver")).status_code == 202

        async def refused() -> bool:
            async with app.db.transaction() as session:
                errors = (
                    await session.scalars(
                        select(DeliveryAttempt.error).where(DeliveryAttempt.outcome != "success")
                    )
                ).all()
            return any("SECRETS_KEY" in (error or "") for error in errors)

        await wait_until(refused, timeout=30, what="the unopenable attempt recorded")
        attempts = (await delivery_state(app, "new"))["attempt_log"]
        assert attempts[-1]["outcome"] == "retryable_failure" and attempts[-1]["http_status"] is None
        assert len(receiver.by_custom_id()["new"]) == 2  # nothing more reached the receiver


async def test_an_operators_edit_keeps_hidden_values_sealed(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # The batch stays open until closed here, so the edit happens before the delivery.
    settings = fast_settings(
        database_url, inference.url + "/v1", secrets_key=KEY, local_batch_max_age_seconds=3600
    )
    async with start_app(settings) as app:
        c = app.client
        assert (
            await c.post("/api/requests", json=request_payload("edit", hooked(receiver.url)))
        ).status_code == 202
        async with app.db.transaction() as session:
            row_id = await session.scalar(select(Request.id).where(Request.custom_id == "edit"))
        # As the UI's form sends it back: one value kept as shown, one changed, the URL moved.
        config = {**hooked(receiver.url + "/moved"), "headers": {"Authorization": "••••", "X-Tenant": "t2"}}
        edited = await c.post(
            f"/requests/{row_id}/delivery",
            data={"delivery_config": json.dumps(config)},
            headers={"HX-Request": "true"},
        )
        assert edited.status_code == 200 and "receiver-token" not in edited.text, edited.text
        stored = await raw_rows_without_delivery(app, "edit")
        assert "receiver-token" not in stored and '"t2"' not in stored and stored.count('"enc:v1:') == 2

        async def building() -> int | None:
            async with app.db.transaction() as session:
                return await session.scalar(select(Batch.id).where(Batch.status == "building"))

        await wait_until(building, timeout=10, what="a building batch")
        assert (await c.post(f"/api/batches/{await building()}/close")).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes("edit")) == 1, timeout=30)
        got = receiver.successes("edit")[0]
        assert (got.path, got.headers["authorization"], got.headers["x-tenant"]) == ("/moved", TOKEN, "t2")


async def raw_rows_without_delivery(app: RunningApp, custom_id: str) -> str:
    async with app.db.transaction() as session:
        return json.dumps(
            await session.scalar(select(Request.delivery).where(Request.custom_id == custom_id))
        )
