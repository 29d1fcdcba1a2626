"""Journey: the operator watches a batch build up live, closes it, and follows it to done.

Requests are submitted through the REST API; everything else is clicked as an operator would.
Screenshots land in tests/artifacts/screenshots/.
"""

from __future__ import annotations

import json

from playwright.async_api import Page, expect

from testkit import RunningApp, request_payload, webhook
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


async def test_a_batch_shows_up_live_closes_and_runs_to_done(
    operator_app: RunningApp, receiver: WebhookReceiver, page: Page, page_errors: PageErrors
) -> None:
    app = operator_app
    receiver.status_for[FAILING] = 500

    # The dashboard, before anything happened.
    await visit(page, app.url + "/")
    await expect(page.locator("h1")).to_have_text("Dashboard")
    await expect(page.locator("#live")).to_be_visible()
    await shot(page, "01-dashboard")

    # The batch list is open while requests arrive; their batch shows up live.
    await visit(page, app.url + "/batches")
    await expect(page.locator("#results td.empty")).to_contain_text("No batches")
    await mark_page(page)
    for custom_id in CUSTOM_IDS:
        answer = await app.client.post(
            "/api/requests", json=request_payload(custom_id, webhook(receiver.url + "/hook"))
        )
        assert answer.status_code == 202, answer.text
    building = page.locator('#results tbody tr[data-status="building"]')
    await expect(building).to_have_count(1, timeout=WAIT_MS)
    row_id = await building.get_attribute("id")
    assert row_id is not None and row_id.startswith("batch-")
    batch_id = int(row_id.removeprefix("batch-"))
    row = page.locator(f"tr#{row_id}")
    await expect(row.locator(".badge")).to_have_text("building")
    await expect(row.locator("td.num").first).to_have_text("5", timeout=WAIT_MS)
    await still_same_page(page)
    await shot(page, "02-batches-building")

    # Close it now; the toast confirms, and the row runs to done without a reload.
    await click_between_polls(page, row.locator("button.act", has_text="Close now"))
    await expect(page.locator("#toast .toast.ok")).to_contain_text(f"Batch {batch_id} closes now")
    await expect(row).to_have_attribute("data-status", "done", timeout=WAIT_MS)
    await expect(row.locator(".badge")).to_have_text("done")
    await expect(row.locator("button.act", has_text="Close now")).to_have_count(0)
    await expect(row.locator("button.act", has_text="Redeliver failed")).to_be_visible()
    await still_same_page(page)
    await shot(page, "03-batches-done")

    # The batch detail: timeline, deliveries legend, and its input file.
    await row.locator(f'a[href="/batches/{batch_id}"]').click()
    await expect(page).to_have_url(f"{app.url}/batches/{batch_id}")
    await expect(page.locator("#batch-status .badge")).to_have_text("done")
    to_column = page.locator("#timeline tbody tr td:nth-child(3)")
    await expect(to_column).to_have_count(6)
    timeline = [t.strip() for t in reversed(await to_column.all_inner_texts())]
    assert timeline == ["building", "ready", "submitting", "processing", "collecting", "done"]
    legend = page.locator(".card", has=page.locator("h3", has_text="Deliveries")).locator(".legend")
    await expect(legend).to_contain_text("delivered")
    await expect(legend).to_contain_text("failed")
    await shot(page, "04-batch-detail")
    href = await page.locator("a", has_text="input.jsonl").get_attribute("href")
    assert href == f"/batches/{batch_id}/input.jsonl"
    jsonl = await app.client.get(href)
    assert jsonl.status_code == 200, jsonl.text
    lines = jsonl.text.splitlines()
    assert len(lines) == 5 and all(lines)
    assert sorted(json.loads(line)["custom_id"] for line in lines) == CUSTOM_IDS

    # The dashboard again, now with numbers.
    await visit(page, app.url + "/")
    await expect(page.locator("#in-flight")).to_have_text("0", timeout=WAIT_MS)
    await expect(page.locator("#success-rate")).not_to_have_text("—", timeout=WAIT_MS)
    await shot(page, "11-dashboard-after")

    page_errors.assert_none()
