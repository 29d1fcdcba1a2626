"""The OpenAPI document describes what the endpoints really return: real answers are validated
against the response schemas it publishes."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from tests.standins.inference import InferenceStandin
from tests.standins.receiver import WebhookReceiver
from tests.support import RunningApp, StartApp, check, fast_settings, wait_until


async def test_real_answers_match_the_published_schema(
    sqlite_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    async with start_app(fast_settings(sqlite_url, inference.url + "/v1")) as app:
        document = (await app.client.get("/api/openapi.json")).json()
        assert document == (await app.client.get("/api/openapi")).json()
        await exercise(app, document, receiver)


async def exercise(app: RunningApp, document: dict[str, Any], receiver: WebhookReceiver) -> None:
    c = app.client
    body = {
        "custom_id": "doc-1",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        "delivery_config": {"type": "webhook", "webhook_url": receiver.url},
    }
    # The published request schema accepts what the API accepts.
    request_schema = {"$ref": "#/components/schemas/RequestIn", "components": document["components"]}
    Draft202012Validator(request_schema).validate(body)

    check(document, "/api/requests", "post", await c.post("/api/requests", json=body))
    check(document, "/api/requests", "post", await c.post("/api/requests", json=body))  # 409
    check(document, "/api/requests", "post", await c.post("/api/requests", json={"custom_id": 1}))  # 422
    check(document, "/api/requests", "post", await c.post("/api/requests", content=b"{"))  # 400
    read = "/api/requests/{custom_id}"
    check(document, read, "get", await c.get("/api/requests/missing"))  # 404
    check(document, "/api/batches", "get", await c.get("/api/batches"))
    await receiver.wait_for(lambda r: len(r.successes()) == 1, timeout=20)

    async def delivered() -> bool:
        detail = (await c.get("/api/requests/doc-1")).json()
        return bool(detail["delivery"] and detail["delivery"]["status"] == "delivered")

    await wait_until(delivered, timeout=10, what="doc-1 delivered")
    detail = await c.get("/api/requests/doc-1")
    check(document, read, "get", detail)
    batch_id = detail.json()["batch_id"]
    check(document, "/api/batches", "get", await c.get("/api/batches"))
    check(document, "/api/batches/{batch_id}", "get", await c.get(f"/api/batches/{batch_id}"))
    check(document, "/api/batches/{batch_id}", "get", await c.get("/api/batches/999"))
    check(document, "/api/batches/{batch_id}/close", "post", await c.post(f"/api/batches/{batch_id}/close"))
    redeliver = "/api/requests/{custom_id_action}"
    check(document, redeliver, "post", await c.post("/api/requests/doc-1/redeliver"))
    check(document, redeliver, "post", await c.post("/api/requests/missing/redeliver"))
    check(document, redeliver, "post", await c.post("/api/requests/doc-1/cancel"))  # 409: finished
    batch_path = "/api/batches/{batch_id}"
    check(document, batch_path + "/cancel", "post", await c.post(f"/api/batches/{batch_id}/cancel"))  # 409
    check(document, batch_path + "/retry", "post", await c.post(f"/api/batches/{batch_id}/retry"))  # 409
    redeliver_all = await c.post(f"/api/batches/{batch_id}/redeliver?only=all")
    check(document, batch_path + "/redeliver", "post", redeliver_all)
    check(document, batch_path + "/redeliver", "post", await c.post("/api/batches/999/redeliver"))  # 404
    check(document, batch_path, "delete", await c.delete(f"/api/batches/{batch_id}"))  # 409: redelivering
    check(document, "/health", "get", await c.get("/health"))
