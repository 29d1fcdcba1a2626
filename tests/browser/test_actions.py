"""Journey: a slow action on a live page. The live poll waits while the action is in flight
(hx-sync), so the action's answer and toast are not lost, and polling carries on afterwards."""

from __future__ import annotations

import asyncio

from playwright.async_api import Page, Route, expect

from testkit import NO_DELIVERY, RunningApp, request_payload, wait_until
from testkit.browser import WAIT_MS, mark_page, still_same_page, visit

SLOW_ACTION_SECONDS = 4.0  # longer than the batch list's poll interval (3 s)


async def test_a_slow_action_holds_the_live_poll_back_and_polling_resumes(
    operator_app: RunningApp, page: Page
) -> None:
    """Without hx-sync, a poll landing while the action is in flight swaps its button out of the
    page and htmx drops the answer (htmx:targetError for #toast): no toast, no refresh.

    Holding back only means something if the page polls at all: the table is shown to change live
    before the action, and again after it."""
    app = operator_app

    async def submit(custom_id: str) -> None:
        answer = await app.client.post("/api/requests", json=request_payload(custom_id, NO_DELIVERY))
        assert answer.status_code == 202, answer.text

    await submit("slow/1")
    await visit(page, app.url + "/batches")
    row = page.locator('#results tbody tr[data-status="building"]')
    await expect(row).to_have_count(1, timeout=WAIT_MS)
    batch_row = page.locator(f"tr#{await row.get_attribute('id')}")
    await mark_page(page)

    swaps: list[str] = []
    await page.expose_function("resultsSwapped", lambda: swaps.append("swap"))
    await page.evaluate(
        """document.body.addEventListener("htmx:afterSettle", (e) => {
            if (e.target.id === "results") window.resultsSwapped();
        })"""
    )

    # Polling runs: a request arriving on the server shows up in the table without a reload.
    await submit("slow/2")
    await expect(batch_row.locator("td.num").first).to_have_text("2", timeout=WAIT_MS)
    await still_same_page(page)
    await wait_until(lambda: swaps, timeout=10, what="the swap of #results to be reported")

    swaps_during_action: list[int] = []

    async def slow_action(route: Route) -> None:
        # The action takes longer than a poll interval: the scenario, not a wait.
        before = len(swaps)
        await asyncio.sleep(SLOW_ACTION_SECONDS)
        swaps_during_action.append(len(swaps) - before)
        await route.continue_()

    await page.route("**/batches/*/close", slow_action)
    await batch_row.locator("button.act", has_text="Close now").click()
    await expect(page.locator("#toast .toast.ok")).to_contain_text("closes now", timeout=WAIT_MS)
    assert swaps_during_action == [0], "a poll swapped the table while the action was in flight"

    # Polling resumes: once the action's own refresh has landed, a new batch still shows up live.
    after_action = len(swaps)
    await wait_until(
        lambda: len(swaps) > after_action, timeout=WAIT_MS / 1000, what="a swap after the action"
    )
    await submit("slow/3")
    await expect(row).to_have_count(1, timeout=WAIT_MS)  # slow/3's new batch, building
    await expect(batch_row).not_to_have_attribute("data-status", "building")
    await still_same_page(page)
