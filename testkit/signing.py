"""Checking Standard Webhooks signatures as a receiver does (the `standardwebhooks` library), and
delivering one request to the stand-in receiver to look at what arrived."""

from __future__ import annotations

from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from testkit.apps import RunningApp
from testkit.builders import request_payload, webhook
from testkit.standins.receiver import Received, WebhookReceiver


def verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether a receiver holding `secret` accepts the delivery."""
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def signatures(received: Received) -> list[str]:
    """The signatures of one delivery (Standard Webhooks: space-separated)."""
    return received.headers["webhook-signature"].split(" ")


async def delivered(
    app: RunningApp, receiver: WebhookReceiver, custom_id: str, delivery: dict[str, Any] | None = None
) -> Received:
    """Submit `custom_id` (to the receiver's /hook unless `delivery` says otherwise) and return
    its first successful delivery."""
    payload = request_payload(custom_id, delivery or webhook(receiver.url + "/hook"))
    answer = await app.client.post("/api/requests", json=payload)
    assert answer.status_code == 202, answer.text
    await receiver.wait_for(lambda r: len(r.successes(custom_id)) == 1, timeout=30)
    return receiver.successes(custom_id)[0]
