"""Journey: the operator finds a request whose delivery failed, and redelivers it once the receiver
recovers, following its attempts live."""

from __future__ import annotations

from playwright.async_api import Page, expect

from testkit import RunningApp, request_payload, wait_until, webhook
from testkit.browser import (
    CUSTOM_IDS,
    FAILING,
    WAIT_MS,
    PageErrors,
    click_between_polls,
    mark_page,
    shot,
    still_same_page,
    visit,
)
from testkit.standins.receiver import WebhookReceiver


async def run_a_batch(app: RunningApp, receiver: WebhookReceiver) -> None:
    """Five requests in one batch, closed through the API; FAILING's receiver answers 500."""
    receiver.status_for[FAILING] = 500
    for custom_id in CUSTOM_IDS:
        answer = await app.client.post(
            "/api/requests", json=request_payload(custom_id, webhook(receiver.url + "/hook"))
        )
        assert answer.status_code == 202, answer.text
    building: list[int] = []

    async def batched() -> bool:
        listed = (await app.client.get("/api/batches")).json()["data"]
        building[:] = [b["id"] for b in listed if b["status"] == "building" and b["request_count"] == 5]
        return bool(building)

    await wait_until(batched, timeout=20, what="the five requests in a building batch")
    [batch_id] = building
    assert (await app.client.post(f"/api/batches/{batch_id}/close")).status_code == 202


async def test_a_failed_delivery_is_found_and_redelivered(
    operator_app: RunningApp, receiver: WebhookReceiver, page: Page, page_errors: PageErrors
) -> None:
    app = operator_app
    await run_a_batch(app, receiver)

    # Requests: the search box filters live; the failing one ends delivery_failed.
    await visit(page, app.url + "/requests")
    rows = page.locator('#results tbody tr[id^="request-"]')
    await expect(rows).to_have_count(5, timeout=WAIT_MS)
    await mark_page(page)
    await page.locator('input[name="search"]').fill(FAILING)
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    await expect(rows.locator("td.cid")).to_have_text(FAILING)
    await still_same_page(page)
    assert "search=browser%2F3" in page.url
    await shot(page, "05-requests-filtered")
    await rows.locator("td.cid a").click()
    await expect(page.locator("h1 .cid")).to_have_text(FAILING)
    await mark_page(page)
    await expect(page.locator("#delivery-status")).to_have_text("delivery_failed", timeout=WAIT_MS)
    attempts = page.locator("#attempts tbody tr[data-outcome]")
    await expect(attempts).to_have_count(2)
    assert await attempts.evaluate_all("rows => rows.map(r => r.dataset.outcome)") == [
        "retryable_failure",
        "retryable_failure",
    ]
    await shot(page, "06-request-delivery-failed")

    # The receiver recovers; Redeliver sends it again and the page follows live.
    receiver.status_for.pop(FAILING)
    await click_between_polls(page, page.locator("#live .actions button.act", has_text="Redeliver"))
    await expect(page.locator("#toast .toast.ok")).to_contain_text("queued again")
    await expect(page.locator('#attempts tbody tr[data-outcome="success"]')).to_have_count(1, timeout=WAIT_MS)
    await expect(page.locator("#delivery-status")).to_have_text("delivered", timeout=WAIT_MS)
    await expect(attempts).to_have_count(3)
    await still_same_page(page)
    assert len(receiver.successes(FAILING)) == 1
    await shot(page, "07-request-redelivered")

    page_errors.assert_none()
