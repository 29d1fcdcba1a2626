"""GET /api/requests: the requests newest first, filtered as the UI's list filters them (status,
delivery status, batch, model, custom_id prefix or substring), paged with before_id like
GET /api/batches, answering what the OpenAPI document says, and 400 for a bad filter."""

from __future__ import annotations

from typing import Any

from testkit import (
    NO_DELIVERY,
    RunningApp,
    StartApp,
    check,
    fast_settings,
    request_payload,
    wait_until,
    webhook,
)
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

PATH = "/api/requests"


async def listed(app: RunningApp, **params: Any) -> list[str]:
    answer = await app.client.get(PATH, params=params)
    assert answer.status_code == 200, answer.text
    return [r["custom_id"] for r in answer.json()["data"]]


async def send_and_finish(app: RunningApp, receiver: WebhookReceiver) -> dict[str, dict[str, Any]]:
    """Five requests on two models; job/2's receiver refuses it for good, other/1 keeps its
    result. Waits until every one has ended and its delivery with it; returns them by custom_id."""
    receiver.status_for["job/2"] = 500
    hook = webhook(receiver.url + "/hook")
    sent = [
        request_payload("job/1", hook),
        request_payload("job/2", hook),
        request_payload("other/1", NO_DELIVERY),
        request_payload("job/3", hook),
        request_payload("m2/job-x", hook, model="second"),
    ]
    for payload in sent:
        assert (await app.client.post(PATH, json=payload)).status_code == 202
    seen: dict[str, dict[str, Any]] = {}

    async def ended() -> bool:
        for payload in sent:
            seen[payload["custom_id"]] = (await app.client.get(f"{PATH}/{payload['custom_id']}")).json()
        deliveries = {c: (r["delivery"] or {}).get("status") for c, r in seen.items()}
        return (
            deliveries
            == {
                "job/1": "delivered",
                "job/2": "delivery_failed",
                "other/1": None,
                "job/3": "delivered",
                "m2/job-x": "delivered",
            }
            and seen["other/1"]["status"] == "succeeded"
        )

    await wait_until(ended, timeout=30, what="every request and its delivery ended")
    return seen


async def test_requests_list_with_the_uis_filters_and_keyset_pages(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", delivery_max_attempts=1)
    async with start_app(settings) as app:
        document = (await app.client.get("/api/openapi.json")).json()
        seen = await send_and_finish(app, receiver)
        newest_first = ["m2/job-x", "job/3", "other/1", "job/2", "job/1"]
        answer = await app.client.get(PATH)
        check(document, PATH, "get", answer, 200)
        assert [r["custom_id"] for r in answer.json()["data"]] == newest_first
        assert answer.json()["next_before_id"] is None
        row = next(r for r in answer.json()["data"] if r["custom_id"] == "job/2")
        assert (row["delivery_status"], row["delivery_attempts"], row["batch_id"]) == (
            "delivery_failed",
            1,
            seen["job/2"]["batch_id"],
        )
        assert row["delivery_config"]["type"] == "webhook" and row["usage"]["total_tokens"] > 0

        assert await listed(app, delivery_status="delivery_failed") == ["job/2"]
        assert await listed(app, delivery_status="delivered") == ["m2/job-x", "job/3", "job/1"]
        assert await listed(app, status="succeeded", model="second") == ["m2/job-x"]
        assert await listed(app, status="pending") == []
        assert await listed(app, batch_id=seen["job/1"]["batch_id"]) == ["job/3", "other/1", "job/2", "job/1"]
        assert await listed(app, custom_id="job/") == ["job/3", "job/2", "job/1"]
        assert await listed(app, custom_id="job", match="contains") == ["m2/job-x", "job/3", "job/2", "job/1"]
        both = {"custom_id": "job/", "delivery_status": "delivered"}
        assert await listed(app, **both) == ["job/3", "job/1"]

        pages: list[list[str]] = []
        before: int | None = None
        while True:
            page = (
                await app.client.get(PATH, params={"limit": 2, **({"before_id": before} if before else {})})
            ).json()
            pages.append([r["custom_id"] for r in page["data"]])
            if (before := page["next_before_id"]) is None:
                break
            assert before == page["data"][-1]["id"]
        assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
        filtered = await app.client.get(PATH, params={"custom_id": "job/", "limit": 2})
        assert [r["custom_id"] for r in filtered.json()["data"]] == ["job/3", "job/2"]
        rest = {"custom_id": "job/", "before_id": filtered.json()["next_before_id"]}
        assert await listed(app, **rest) == ["job/1"]


async def test_bad_filter_values_are_400_in_the_apis_error_shape(
    sqlite_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        document = (await app.client.get("/api/openapi.json")).json()
        bad: list[dict[str, Any]] = [
            {"status": "finished"},
            {"delivery_status": "sent"},
            {"batch_id": "0"},
            {"batch_id": "one"},
            {"batch_id": str(2**63)},
            {"before_id": "-3"},
            {"limit": "0"},
            {"limit": "501"},
            {"custom_id": ""},
            {"custom_id": "x" * 513},
            {"custom_id": "a", "match": "exact"},
            {"model": "x" * 256},
        ]
        for params in bad:
            answer = await app.client.get(PATH, params=params)
            check(document, PATH, "get", answer, 400, "bad_request")
        assert (await app.client.get(PATH)).json() == {"data": [], "next_before_id": None}
