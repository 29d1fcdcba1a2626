"""Batch events (BATCH_EVENTS_WEBHOOK_URL): every batch that ends, native or drop-in, is announced
in OpenAI's webhook event shape, signed per Standard Webhooks (verified here by the official
OpenAI SDK's own `webhooks.unwrap`), with the retries and audit trail of result deliveries.
(A batch's start is announced too: tests/app/delivery/test_batch_event_lifecycle.py.)"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from openai import InvalidWebhookSignatureError, OpenAI
from openai.types.webhooks import BatchCancelledWebhookEvent, BatchCompletedWebhookEvent
from sqlalchemy import func, select

from app.db.models import BatchEvent
from app.ground.steps import Step
from testkit import RunningApp, StartApp, fast_settings, wait_until
from testkit.openai_sdk import call, line, new_batch, sdk, until_status, upload
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import Received, WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"batch events secret, 32 bytes ok").decode()
RESULTS_SECRET = "whsec_" + base64.b64encode(b"a different secret for results!!").decode()
ENDS = {"batch.completed", "batch.failed", "batch.expired", "batch.cancelled"}


def events(receiver: WebhookReceiver) -> list[Received]:
    return [r for r in receiver.received if r.path == "/events"]


def ends(receiver: WebhookReceiver) -> list[Received]:
    """The events that end a batch (the ones OpenAI sends too)."""
    return [r for r in events(receiver) if r.json["type"] in ENDS]


def verified(received: Received, secret: str = SECRET) -> Any:
    """The event as the OpenAI SDK reads it; raises unless the signature is the secret's."""
    client = OpenAI(api_key="x", base_url="http://127.0.0.1:9/v1")
    return client.webhooks.unwrap(received.body, received.headers, secret=secret)


async def test_native_and_dropin_batches_are_announced_signed_and_retried(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    receiver.fail_first["batch.completed"] = 2  # the first event's first two attempts fail
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        batch_events_webhook_url=receiver.url + "/events",
        batch_events_webhook_secret=SECRET,
        webhook_secret=RESULTS_SECRET,
    )
    async with start_app(settings) as app:
        assert (await app.submit("native-1", receiver.url + "/results")).status_code == 202
        await receiver.wait_for(lambda r: any(e.status == 200 for e in ends(r)), timeout=20)
        native = verified(next(e for e in ends(receiver) if e.status == 200))
        assert isinstance(native, BatchCompletedWebhookEvent) and native.object == "event"
        batch_id = int(native.data.id)
        # Results keep their own secret: the result's signature is not the events' one.
        result = next(r for r in receiver.received if r.path == "/results")
        verifier = OpenAI(api_key="x", base_url="http://127.0.0.1:9/v1").webhooks
        verifier.verify_signature(result.body, result.headers, secret=RESULTS_SECRET)
        with pytest.raises(InvalidWebhookSignatureError):
            verifier.verify_signature(result.body, result.headers, secret=SECRET)

        # Retried like a result, every attempt audited on the batch's timeline.
        async def announcement() -> dict[str, Any]:
            detail = (await app.client.get(f"/api/batches/{batch_id}")).json()
            [announced] = [
                e["announced"]
                for e in detail["events"]
                if e["announced"] and e["announced"]["type"] == "batch.completed"
            ]
            return announced  # type: ignore[no-any-return]

        async def recorded() -> bool:
            return (await announcement())["status"] == "delivered"

        await wait_until(recorded, timeout=10, what="the event's delivery recorded")
        announced = await announcement()
        assert announced["type"] == "batch.completed"
        assert announced["attempts"] == 3 and announced["delivery_id"].startswith("dlv_")
        assert [e.status for e in ends(receiver)] == [500, 500, 200]
        assert len({e.headers["webhook-id"] for e in ends(receiver)}) == 1  # one id across retries
        page = await app.client.get(f"/batches/{batch_id}")
        assert "Event webhook" in page.text and announced["delivery_id"] in page.text

        # A drop-in batch is announced under its face's id, once the face shows it completed.
        client = sdk(app)
        created = await new_batch(client, (await upload(client, line("a"), line("b"))).id)
        await receiver.wait_for(
            lambda r: any(e.json["data"]["id"] == created.id for e in ends(r) if e.status == 200)
        )
        event = verified(next(e for e in ends(receiver) if e.json["data"]["id"] == created.id))
        assert isinstance(event, BatchCompletedWebhookEvent)
        assert (await call(client.batches.retrieve, created.id)).status == "completed"


async def test_failed_and_cancelled_batches_are_announced_once(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    inference.delay_seconds = 1.0  # slow answers keep the batch running while it is cancelled
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        batch_events_webhook_url=receiver.url + "/events",
        batch_events_webhook_secret=SECRET,
    )
    async with start_app(settings) as app:
        client = sdk(app)
        invalid = await new_batch(client, (await upload(client, b"{not json\n")).id)
        running = await new_batch(client, (await upload(client, line("a"), line("b"))).id)
        await call(client.batches.cancel, running.id)
        await until_status(client, running.id, "cancelled")

        def announced(r: WebhookReceiver) -> set[str]:
            return {f"{e.json['type']} {e.json['data']['id']}" for e in ends(r) if e.status == 200}

        expected = {f"batch.failed {invalid.id}", f"batch.cancelled {running.id}"}
        await receiver.wait_for(lambda r: expected <= announced(r))
        cancelled = verified(next(e for e in ends(receiver) if e.json["data"]["id"] == running.id))
        assert isinstance(cancelled, BatchCancelledWebhookEvent)
        # Each end is announced once: another deliver round sends nothing more.
        seen = len(events(receiver))
        await app.worker.steps[Step.FINISH].run_once()
        await app.worker.steps[Step.DELIVER].run_once()
        assert len(events(receiver)) == seen and len(ends(receiver)) == 2


async def test_without_a_url_nothing_is_announced_later(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        assert (await app.submit("quiet", receiver.url + "/results")).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes("quiet")) == 1)

        async def cleared() -> bool:
            return await marks_waiting(app) == 0

        await wait_until(cleared, timeout=10, what="the end's mark cleared")
    # The same database with a URL set later: only the new batch's end is announced.
    later = fast_settings(
        database_url, inference.url + "/v1", batch_events_webhook_url=receiver.url + "/events"
    )
    async with start_app(later) as app:
        assert (await app.submit("loud", receiver.url + "/results")).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes("loud")) == 1)
        loud = (await app.client.get("/api/requests/loud")).json()["batch_id"]

        async def announced() -> bool:
            detail = (await app.client.get(f"/api/batches/{loud}")).json()
            return any((e["announced"] or {}).get("status") == "delivered" for e in detail["events"])

        await wait_until(announced, timeout=10, what="the new batch's end announced")
        assert {e.json["data"]["id"] for e in events(receiver)} == {str(loud)}


async def marks_waiting(app: RunningApp) -> int:
    async with app.db.transaction() as session:
        return int(await session.scalar(select(func.count()).where(BatchEvent.announce)) or 0)
