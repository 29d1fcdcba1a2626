"""Every UI page, with data in it, shows text and never markup escaped into text: a template that
builds HTML in a string (`'<span ...>' ~ x`) has it escaped by autoescape, and the operator reads
`<span class="muted">none</span>` in a table cell instead of a grey "none"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Page

from testkit import RunningApp, StartApp, fast_settings, request_payload, wait_until, webhook
from testkit.browser import PageErrors, visit
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

KEY = "browser-key-escaped-7f1d"
# What markup looks like once escaped into text (and escaped twice).
ESCAPED = ("<span", "</", "&lt;", "&gt;", "&amp;lt;", "&amp;gt;")


@pytest.fixture
async def keyed_app(
    sqlite_url: str, inference: InferenceStandin, start_app: StartApp
) -> AsyncIterator[RunningApp]:
    """Batches of the model "waits" stay building (no age closes them); the test closes the other."""
    settings = fast_settings(
        sqlite_url,
        inference.url + "/v1",
        api_keys=KEY,
        local_batch_max_age_seconds=3600,
        delivery_max_attempts=1,
    )
    async with start_app(settings) as app:
        app.client.headers["authorization"] = f"Bearer {KEY}"
        yield app


async def fill(app: RunningApp, receiver: WebhookReceiver) -> dict[str, Any]:
    """Requests that ended every way a row can show (delivered, failed delivery, no delivery, one
    still pending with no delivery yet), their batches, and a drop-in batch; the ids to visit."""
    receiver.status_for["refused"] = 500
    sent = {
        "delivered": webhook(receiver.url + "/hook"),
        "refused": webhook(receiver.url + "/hook"),
        "kept": {"type": "none"},
    }
    for custom_id, delivery in sent.items():
        answer = await app.client.post("/api/requests", json=request_payload(custom_id, delivery))
        assert answer.status_code == 202, answer.text
    waiting = request_payload("waiting", webhook(receiver.url + "/hook"), model="waits")
    assert (await app.client.post("/api/requests", json=waiting)).status_code == 202

    building: list[int] = []

    async def grouped() -> bool:
        listed = (await app.client.get("/api/batches", params={"status": "building"})).json()["data"]
        building[:] = [b["id"] for b in listed if b["model"] == "stand-in" and b["request_count"] == 3]
        return bool(building)

    await wait_until(grouped, timeout=20, what="the three requests in one building batch")
    assert (await app.client.post(f"/api/batches/{building[0]}/close")).status_code == 202

    async def ended() -> bool:
        statuses = [(await app.client.get(f"/api/requests/{c}")).json() for c in sent]
        deliveries = [s["delivery"]["status"] if s["delivery"] else None for s in statuses]
        return deliveries == ["delivered", "delivery_failed", None] and statuses[2]["status"] == "succeeded"

    await wait_until(ended, timeout=30, what="every request ended and its delivery with it")
    upload = await app.client.post(
        "/v1/files",
        data={"purpose": "batch"},
        files={
            "file": (
                "in.jsonl",
                b'{"custom_id": "f", "method": "POST", "url": "/v1/chat/completions", '
                b'"body": {"model": "stand-in", "messages": []}}\n',
            )
        },
    )
    assert upload.status_code == 200, upload.text
    dropin = await app.client.post(
        "/v1/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    assert dropin.status_code == 200, dropin.text
    batches = [b["id"] for b in (await app.client.get("/api/batches")).json()["data"]]
    requests = [(await app.client.get(f"/api/requests/{c}")).json()["id"] for c in [*sent, "waiting"]]
    return {"batches": batches, "requests": requests}


async def shown_text(page: Page, url: str) -> str:
    await visit(page, url)
    await page.wait_for_load_state("networkidle")
    text: str = await page.locator("body").inner_text()
    return text


async def test_no_page_shows_escaped_markup(
    keyed_app: RunningApp, receiver: WebhookReceiver, page: Page, page_errors: PageErrors
) -> None:
    app = keyed_app
    ids = await fill(app, receiver)
    shown: dict[str, str] = {"/login": await shown_text(page, app.url + "/login")}
    await page.fill('#login input[name="key"]', KEY)
    await page.click("#login button")
    await page.wait_for_url(app.url + "/")

    paths = [
        "/",
        "/batches",
        "/batches?status=building",
        *(f"/batches/{i}" for i in ids["batches"]),
        "/requests",
        "/requests?delivery_status=delivery_failed",
        "/requests?search=wait&match=contains",
        *(f"/requests/{i}" for i in ids["requests"]),
        "/settings",
        "/keys",
    ]
    for path in paths:
        shown[path] = await shown_text(page, app.url + path)
    escaped = {path: [m for m in ESCAPED if m in text] for path, text in shown.items()}
    assert {path: found for path, found in escaped.items() if found} == {}
    # The cells that used to show markup say what they mean.
    assert "none" in shown["/requests"] and "webhook" in shown["/requests"]
    page_errors.assert_none()
