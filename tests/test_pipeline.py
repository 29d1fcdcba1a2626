"""End to end: REST intake → batching → local backend → signed webhook delivery, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from tests.conftest import StartApp, fast_settings, wait_until
from tests.standins.inference import InferenceStandin
from tests.standins.receiver import WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_one_request_is_delivered_signed(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", webhook_secret=SECRET)
    async with start_app(settings) as app:
        answer = await app.submit("greeting/1", receiver.url + "/hook")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "pending"
        await receiver.wait_for(lambda r: len(r.successes()) == 1, timeout=15)

        received = receiver.successes()[0]
        verified = Webhook(SECRET).verify(received.body, received.headers)
        assert verified["custom_id"] == "greeting/1"
        assert verified["response"]["status_code"] == 200
        assert verified["response"]["body"]["choices"][0]["message"]["content"] == "echo: greeting/1"
        assert verified["error"] is None
        assert received.headers["webhook-id"].startswith("dlv_")
        assert received.headers["x-batchgate-custom-id"] == "greeting/1"
        assert received.headers["x-batchgate-attempt"] == "1"
        assert abs(int(received.headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 60

        async def recorded() -> bool:
            detail = (await app.client.get("/api/requests/greeting/1")).json()
            return detail["delivery"] is not None and detail["delivery"]["status"] == "delivered"

        await wait_until(recorded, timeout=10, what="delivery recorded as delivered")
        detail = (await app.client.get("/api/requests/greeting/1")).json()
        assert detail["status"] == "succeeded"
        assert detail["result"]["custom_id"] == "greeting/1"
        assert detail["usage"]["total_tokens"] > 0
        assert [a["outcome"] for a in detail["delivery"]["attempt_log"]] == ["success"]
        batch = (await app.client.get(f"/api/batches/{detail['batch_id']}")).json()
        assert batch["status"] == "done"
        assert [e["to_status"] for e in batch["events"]] == [
            "building",
            "ready",
            "submitting",
            "processing",
            "collecting",
            "done",
        ]
