"""Driving the app against the stand-in OpenAI Batch API: settings, submitting, waiting, reading."""

from __future__ import annotations

import json
from typing import Any

from app.ground.config import Settings
from testkit.apps import RunningApp, fast_settings
from testkit.builders import request_payload
from testkit.standins.openai_batch import OpenAIBatchStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.waiting import wait_until

MODEL = "gpt-4o-mini"
FINISHED = {"succeeded", "failed", "cancelled", "expired"}


def openai_settings(database_url: str, api: OpenAIBatchStandin, **overrides: Any) -> Settings:
    """Every request goes to the stand-in OpenAI, with short ages, polls and backoffs."""
    values: dict[str, Any] = {
        "default_backend": "openai",
        "openai_base_url": api.url + "/v1",  # type: ignore[attr-defined]
        "openai_api_key": "sk-test",
        "openai_batch_max_age_seconds": 0.2,
        "openai_poll_seconds": 0.05,
        "openai_retry_backoff_seconds": 0.01,
        "openai_token_limit_backoff_seconds": 0.05,
        "openai_auth_recheck_seconds": 0.2,
        **overrides,
    }
    return fast_settings(database_url, **values)


async def submit(app: RunningApp, receiver: WebhookReceiver, *custom_ids: str, **body: Any) -> None:
    """Submit requests for MODEL, each delivered to the receiver's webhook, in one bulk call:
    committed together, so one batch takes them all (sent one by one, on a loaded machine the
    batch's age could close it between two)."""
    payloads = []
    for custom_id in custom_ids:
        payload = request_payload(custom_id, {"type": "webhook", "webhook_url": receiver.url + "/hook"})
        payload["body"].update(model=MODEL, **body)
        payloads.append(payload)
    answer = await app.client.post("/api/requests/bulk", json=payloads)
    assert answer.status_code == 200 and answer.json()["rejected"] == 0, answer.text


async def finished(app: RunningApp, *custom_ids: str, within: float = 30) -> dict[str, dict[str, Any]]:
    """Wait until each request has ended and its result was delivered; returns their details."""
    details: dict[str, dict[str, Any]] = {}

    async def done() -> bool:
        for custom_id in custom_ids:
            details[custom_id] = (await app.client.get(f"/api/requests/{custom_id}")).json()
        return all(
            d["status"] in FINISHED and d["delivery"] and d["delivery"]["status"] == "delivered"
            for d in details.values()
        )

    await wait_until(done, timeout=within, what=f"{custom_ids} finished and delivered")
    return details


async def batches(app: RunningApp) -> list[dict[str, Any]]:
    """Every batch with its events, oldest first."""
    listed = (await app.client.get("/api/batches", params={"limit": 100})).json()["data"]
    return [(await app.client.get(f"/api/batches/{b['id']}")).json() for b in reversed(listed)]


async def remote_files_deleted(app: RunningApp, batch_id: int) -> bool:
    """Whether the batch's files at OpenAI are deleted, as GET /api/batches/{id} says."""
    batch = (await app.client.get(f"/api/batches/{batch_id}")).json()
    return batch["remote"]["files_deleted_at"] is not None


def reasons(batch: dict[str, Any]) -> str:
    """A batch's timeline reasons, joined."""
    return " | ".join(e["reason"] or "" for e in batch["events"])


def delivered_bodies(receiver: WebhookReceiver) -> dict[str, dict[str, Any]]:
    """The last body delivered for each custom_id."""
    return {cid: json.loads(got[-1].body) for cid, got in receiver.by_custom_id().items()}
