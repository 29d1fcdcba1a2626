"""The intake API's answers: 202, every 422 reason, 409, 413, 400, and reading requests back."""

from __future__ import annotations

from typing import Any

import pytest

from testkit import RunningApp, StartApp, fast_settings


def valid(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "custom_id": "req-1",
        "url": "/v1/chat/completions",
        "method": "POST",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2},
        "delivery_config": {"type": "webhook", "webhook_url": "https://example.com/hook"},
    }
    payload.update(changes)
    return payload


@pytest.fixture
async def api(sqlite_url: str, start_app: StartApp) -> RunningApp:
    # The scheduler is off: these tests look at intake alone, so nothing moves underneath them.
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False, batch_max_bytes=4096)) as app:
        yield app


async def test_accepts_a_valid_request(api: RunningApp) -> None:
    answer = await api.client.post("/api/requests", json=valid())
    assert answer.status_code == 202
    body = answer.json()
    assert body == {"id": body["id"], "custom_id": "req-1", "status": "pending"}

    detail = (await api.client.get("/api/requests/req-1")).json()
    assert detail["status"] == "pending"
    assert detail["body"]["temperature"] == 0.2  # unknown body keys pass through untouched
    assert detail["delivery_config"] == {"type": "webhook", "webhook_url": "https://example.com/hook"}
    assert detail["result"] is None and detail["delivery"] is None


@pytest.mark.parametrize(
    ("payload", "code", "pointer"),
    [
        (valid(extra="x"), "unknown_field", "/extra"),
        (valid(url="/v1/images/generations"), "invalid_url", "/url"),
        (valid(method="GET"), "invalid_method", "/method"),
        (valid(body={"messages": []}), "missing_model", "/body/model"),
        (valid(body={"model": ""}), "invalid_model", "/body/model"),
        (
            valid(delivery_config={"type": "webhook", "webhook_url": "ftp://x/y"}),
            "invalid_webhook_url",
            "/delivery_config/webhook_url",
        ),
        (
            valid(delivery_config={"type": "webhook", "webhook_url": "not a url"}),
            "invalid_webhook_url",
            "/delivery_config/webhook_url",
        ),
        (
            valid(delivery_config={"type": "webhook", "webhook_url": "https://u:p@example.com/"}),
            "invalid_webhook_url",
            "/delivery_config/webhook_url",
        ),
        (valid(delivery_config={"type": "carrier-pigeon"}), "invalid_delivery_type", "/delivery_config"),
        (
            valid(delivery_config={"type": "webhook", "webhook_url": "https://x", "extra": 1}),
            "unknown_field",
            "/delivery_config/extra",
        ),
        ({k: v for k, v in valid().items() if k != "custom_id"}, "missing_field", "/custom_id"),
        ({k: v for k, v in valid().items() if k != "delivery_config"}, "missing_field", "/delivery_config"),
        (valid(custom_id=""), "invalid_custom_id", "/custom_id"),
        (valid(custom_id="a//b"), "invalid_custom_id", "/custom_id"),
        (valid(custom_id="/lead"), "invalid_custom_id", "/custom_id"),
        (valid(custom_id="a/../b"), "invalid_custom_id", "/custom_id"),
        (valid(body={"model": "m", "messages": [{"content": "x" * 5000}]}), "request_too_large", "/body"),
    ],
)
async def test_every_rule_failure_is_a_422_with_a_pointer(
    api: RunningApp, payload: dict[str, Any], code: str, pointer: str
) -> None:
    answer = await api.client.post("/api/requests", json=payload)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert [(e["code"], e["source"].get("pointer")) for e in errors] == [(code, pointer)]
    assert errors[0]["title"] and errors[0]["detail"]


async def test_several_problems_are_reported_together(api: RunningApp) -> None:
    payload = valid(url="/v1/nope", method="PUT", extra=1, body={"x": 1})
    answer = await api.client.post("/api/requests", json=payload)
    assert answer.status_code == 422
    codes = sorted(e["code"] for e in answer.json()["errors"])
    assert codes == ["invalid_method", "invalid_url", "missing_model", "unknown_field"]
    # Nothing was stored for a rejected request.
    assert (await api.client.get("/api/requests/req-1")).status_code == 404


async def test_not_json_is_a_400(api: RunningApp) -> None:
    headers = {"content-type": "application/json"}
    answer = await api.client.post("/api/requests", content=b"{nope", headers=headers)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["code"] == "invalid_json"


async def test_a_json_array_is_a_422_not_a_crash(api: RunningApp) -> None:
    answer = await api.client.post("/api/requests", json=[valid()])
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["code"] == "invalid_value"
    assert answer.json()["errors"][0]["source"] == {"pointer": ""}


async def test_duplicate_custom_id_is_a_409_and_keeps_the_first(api: RunningApp) -> None:
    assert (await api.client.post("/api/requests", json=valid())).status_code == 202
    second = valid(body={"model": "other-model"})
    answer = await api.client.post("/api/requests", json=second)
    assert answer.status_code == 409
    assert answer.json()["errors"][0]["code"] == "duplicate_custom_id"
    assert (await api.client.get("/api/requests/req-1")).json()["model"] == "gpt-4o-mini"


async def test_body_over_the_limit_is_a_413(sqlite_url: str, start_app: StartApp) -> None:
    settings = fast_settings(sqlite_url, scheduler_enabled=False, api_max_body_bytes=2048)
    async with start_app(settings) as app:
        payload = valid(body={"model": "m", "messages": [{"role": "user", "content": "x" * 4096}]})
        answer = await app.client.post("/api/requests", json=payload)
        assert answer.status_code == 413
        assert answer.json()["errors"][0]["code"] == "body_too_large"


async def test_custom_id_with_slashes_reads_and_redelivers(api: RunningApp) -> None:
    custom_id = "tenant/a/job 7/redeliver"
    assert (await api.client.post("/api/requests", json=valid(custom_id=custom_id))).status_code == 202
    detail = await api.client.get(f"/api/requests/{custom_id}")
    assert detail.status_code == 200
    assert detail.json()["custom_id"] == custom_id
    # No result yet: redelivery is refused with a reason, not silently accepted.
    answer = await api.client.post(f"/api/requests/{custom_id}/redeliver")
    assert answer.status_code == 409
    assert answer.json()["errors"][0]["code"] == "not_finished"


async def test_unknown_request_and_unknown_action_are_404(api: RunningApp) -> None:
    assert (await api.client.get("/api/requests/nope")).json()["errors"][0]["code"] == "not_found"
    assert (await api.client.post("/api/requests/nope/redeliver")).status_code == 404
    assert (await api.client.post("/api/requests/req-1/explode")).status_code == 404


async def test_close_on_a_missing_batch_is_404(api: RunningApp) -> None:
    answer = await api.client.post("/api/batches/999/close")
    assert answer.status_code == 404
    assert answer.json()["errors"][0]["code"] == "not_found"


async def test_health_and_docs_are_served(api: RunningApp) -> None:
    health = await api.client.get("/health")
    assert health.status_code == 200
    assert health.json()["database"] == "ok"
    assert health.json()["scheduler"] == "disabled"
    schema = (await api.client.get("/api/openapi")).json()
    assert schema["paths"]["/api/requests"]["post"]["requestBody"]["content"]["application/json"]
    assert "RequestIn" in schema["components"]["schemas"]
    swagger = await api.client.get("/api/swaggerui")
    assert swagger.status_code == 200 and "/static/swagger-ui/swagger-ui-bundle.js" in swagger.text
    assert "cdn" not in swagger.text.lower()  # vendored: the docs work offline
    bundle = await api.client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
