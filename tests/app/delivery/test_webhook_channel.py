"""The webhook channel against the stand-in receiver: a timeout is a failure to retry, and a 429's
Retry-After is reported."""

from __future__ import annotations

from app.channels.base import Message
from app.channels.webhook import WebhookChannel
from testkit import fast_settings
from testkit.standins.receiver import WebhookReceiver


def message(url: str, custom_id: str = "c1") -> Message:
    return Message("dlv_1", custom_id, 1, b'{"custom_id":"c1"}', {"type": "webhook", "webhook_url": url})


async def test_webhook_timeout_is_a_retryable_failure(receiver: WebhookReceiver) -> None:
    receiver.delay_for["c1"] = 2.0
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite://", webhook_timeout_seconds=0.2))
    try:
        result = await channel.send(message(receiver.url + "/hook"))
    finally:
        await channel.close()
    assert result.outcome == "retryable_failure"
    assert result.error and result.error.startswith("timeout")


async def test_429_retry_after_is_reported(receiver: WebhookReceiver) -> None:
    receiver.fail_first["c1"] = 1
    receiver.fail_status = 429
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite://"))
    try:
        result = await channel.send(message(receiver.url + "/hook"))
        assert (result.outcome, result.http_status) == ("retryable_failure", 429)
        assert (await channel.send(message(receiver.url + "/hook"))).outcome == "success"
    finally:
        await channel.close()
