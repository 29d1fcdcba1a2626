"""A drop-in batch's own completion webhook: named at create through the official SDKs (OpenAI:
the `batchgate_webhook_url` metadata key; Anthropic: the `batchgate-webhook-url` header), it gets
the batch's end as a batch event, signed per Standard Webhooks (verified with the
`standardwebhooks` library), through the outbox; a URL no delivery could go to is refused at
create."""

from __future__ import annotations

import base64

import anthropic
import openai
import pytest
from standardwebhooks.webhooks import Webhook

from testkit import StartApp, fast_settings
from testkit.anthropic_sdk import ended, entry
from testkit.anthropic_sdk import sdk as anthropic_sdk
from testkit.openai_sdk import call, line, new_batch, sdk, until_status, upload
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"results secret for batch hooks!!").decode()
EVENTS_SECRET = "whsec_" + base64.b64encode(b"the operator's batch events key!").decode()


async def test_openai_and_anthropic_batches_get_their_end_at_their_own_webhook(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    operator_hook = {"batch_events_webhook_url": receiver.url + "/operator"}
    secrets = {"webhook_secret": SECRET, "batch_events_webhook_secret": EVENTS_SECRET}
    async with start_app(
        fast_settings(database_url, inference.url + "/v1", **operator_hook, **secrets)
    ) as app:
        client = sdk(app)
        metadata = {"batchgate_webhook_url": receiver.url + "/openai-hook", "team": "search"}
        created = await new_batch(client, (await upload(client, line("a"), line("b"))).id, metadata=metadata)
        await until_status(client, created.id, "completed")
        await receiver.wait_for(lambda r: len(r.answered("/openai-hook")) == 1)

        [delivered] = receiver.answered("/openai-hook")
        event = Webhook(SECRET).verify(delivered.body, delivered.headers)
        assert event["type"] == "batch.completed" and event["object"] == "event"
        assert event["data"]["id"] == created.id
        assert delivered.headers["webhook-id"].startswith("dlv_")

        # The operator's events webhook still gets every event, with its own secret.
        def operator(r: WebhookReceiver) -> list[str]:
            return [
                Webhook(EVENTS_SECRET).verify(e.body, e.headers)["type"]
                for e in r.answered("/operator")
                if e.json["data"]["id"] == created.id
            ]

        await receiver.wait_for(lambda r: "batch.completed" in operator(r))
        assert operator(receiver)[0] == "batch.created"

        aclient = anthropic_sdk(app)
        message_batch = await aclient.messages.batches.create(
            requests=[entry("x"), entry("y")],  # type: ignore[list-item]
            extra_headers={"batchgate-webhook-url": receiver.url + "/anthropic-hook"},
        )
        await ended(aclient, message_batch.id)
        await receiver.wait_for(lambda r: len(r.answered("/anthropic-hook")) == 1)
        [delivered] = receiver.answered("/anthropic-hook")
        event = Webhook(SECRET).verify(delivered.body, delivered.headers)
        assert (event["type"], event["data"]["id"]) == ("batch.completed", message_batch.id)
        # Only its end: no created, in_progress or finalizing event reached the batch's own webhook.
        assert len([r for r in receiver.received if r.path in ("/openai-hook", "/anthropic-hook")]) == 2


async def test_a_webhook_no_delivery_could_reach_is_refused_at_create(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        client = sdk(app)
        file = await upload(client, line("a"))
        metadata = {"batchgate_webhook_url": "http://169.254.169.254/latest/meta-data"}
        with pytest.raises(openai.BadRequestError) as refused:
            await new_batch(client, file.id, metadata=metadata)
        assert refused.value.param == "metadata/batchgate_webhook_url"
        assert "169.254.169.254" in refused.value.message
        with pytest.raises(openai.BadRequestError):
            await new_batch(client, file.id, metadata={"batchgate_webhook_url": "ftp://example.com/x"})

        aclient = anthropic_sdk(app)
        with pytest.raises(anthropic.BadRequestError):
            await aclient.messages.batches.create(
                requests=[entry("x")],  # type: ignore[list-item]
                extra_headers={"batchgate-webhook-url": "http://169.254.169.254/x"},
            )
        # Nothing was created by the refused calls.
        assert (await call(client.batches.list)).data == []
        assert [b async for b in aclient.messages.batches.list()] == []
