"""Batch events follow a batch from start to end (issue 25): `batch.created`, `batch.in_progress`,
`batch.finalizing`, then its end, each once per batch and received in that order, even when an
earlier event's delivery has to be retried. Real receiver, real stand-ins, both databases."""

from __future__ import annotations

from typing import Any

from app.ground.steps import Step
from testkit import RunningApp, StartApp, fast_settings, wait_until
from testkit.openai import batches, finished, openai_settings, submit
from testkit.openai_sdk import line, new_batch, sdk, upload
from testkit.standins.inference import InferenceStandin
from testkit.standins.openai_batch import OpenAIBatchStandin
from testkit.standins.receiver import Received, WebhookReceiver

LIFECYCLE = ["batch.created", "batch.in_progress", "batch.finalizing", "batch.completed"]


def events(receiver: WebhookReceiver, data_id: str | None = None) -> list[Received]:
    return [
        r
        for r in receiver.received
        if r.path == "/events" and (data_id is None or r.json["data"]["id"] == data_id)
    ]


def sent(receiver: WebhookReceiver, data_id: str) -> list[tuple[str, int]]:
    """Every attempt at the batch's events, in arrival order: (type, status answered)."""
    return [(r.json["type"], r.status) for r in events(receiver, data_id)]


def delivered(receiver: WebhookReceiver, data_id: str) -> list[str]:
    return [kind for kind, status in sent(receiver, data_id) if status == 200]


async def test_a_native_batch_is_followed_from_created_to_completed_in_order(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # The first event fails twice: the later ones wait for it instead of overtaking it.
    receiver.fail_first["batch.created"] = 2
    settings = fast_settings(
        database_url, inference.url + "/v1", batch_events_webhook_url=receiver.url + "/events"
    )
    async with start_app(settings) as app:
        assert (await app.submit("n-1", receiver.url + "/results")).status_code == 202
        batch_id = str((await finished_native(app, "n-1"))["batch_id"])
        await receiver.wait_for(lambda r: "batch.completed" in delivered(r, batch_id), timeout=20)
        assert sent(receiver, batch_id) == [
            ("batch.created", 500),
            ("batch.created", 500),
            *[(kind, 200) for kind in LIFECYCLE],
        ]
        ids = [r.json["id"] for r in events(receiver, batch_id) if r.status == 200]
        assert len(set(ids)) == 4  # four events, each with its own id
        # Every event's delivery is shown on the batch's timeline.
        detail = (await app.client.get(f"/api/batches/{batch_id}")).json()
        announced = [e["announced"]["type"] for e in detail["events"] if e["announced"]]
        assert announced == LIFECYCLE

        # Nothing more is sent for it on later rounds.
        await app.worker.steps[Step.FINISH].run_once()
        await app.worker.steps[Step.DELIVER].run_once()
        assert len(events(receiver, batch_id)) == 6


async def finished_native(app: RunningApp, custom_id: str) -> dict[str, Any]:
    detail: dict[str, Any] = {}

    async def done() -> bool:
        detail.update((await app.client.get(f"/api/requests/{custom_id}")).json())
        return bool(detail["status"] == "succeeded")

    await wait_until(done, timeout=20, what=f"{custom_id} succeeded")
    return detail


async def test_a_dropin_batch_is_announced_created_at_create_and_ends_once(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    settings = fast_settings(
        database_url, inference.url + "/v1", batch_events_webhook_url=receiver.url + "/events"
    )
    async with start_app(settings) as app:
        client = sdk(app)
        created = await new_batch(client, (await upload(client, line("a"), line("b"))).id)
        await receiver.wait_for(lambda r: "batch.completed" in delivered(r, created.id), timeout=20)
        assert delivered(receiver, created.id) == LIFECYCLE
        # A batch refused at create is announced created, then failed: a consumer still sees a start.
        refused = await new_batch(client, (await upload(client, b"{not json\n")).id)
        await receiver.wait_for(lambda r: "batch.failed" in delivered(r, refused.id), timeout=20)
        assert delivered(receiver, refused.id) == ["batch.created", "batch.failed"]


async def test_an_openai_batch_sent_again_is_in_progress_once(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # token_limit_exceeded twice: the same batch goes processing → ready → processing again.
    openai_api.next_batches = [{"error_code": "token_limit_exceeded"}] * 2
    settings = openai_settings(database_url, openai_api, batch_events_webhook_url=receiver.url + "/events")
    async with start_app(settings) as app:
        await submit(app, receiver, "t/1", "t/2")
        await finished(app, "t/1", "t/2")
        [batch] = await batches(app)
        batch_id = str(batch["id"])
        entered = [e["to_status"] for e in batch["events"] if e["from_status"] != e["to_status"]]
        assert entered.count("processing") == 3
        await receiver.wait_for(lambda r: "batch.completed" in delivered(r, batch_id), timeout=20)
        assert delivered(receiver, batch_id) == LIFECYCLE
