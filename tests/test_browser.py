"""The operator UI in a real browser: live polling, actions with toasts, filters, settings.

Drives Debian's chromium through playwright (never playwright's own browser download). Requests
are submitted through the REST API; everything else is clicked and typed as an operator would.
Screenshots of every page land in tests/artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Dialog, Locator, Page, Response, Route, async_playwright, expect

from tests.conftest import StartApp, fast_settings, request_payload, require_service
from tests.standins.inference import InferenceStandin
from tests.standins.receiver import WebhookReceiver

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
SCREENSHOTS = Path(__file__).parent / "artifacts" / "screenshots"
SLOW_ACTION_SECONDS = 4.0
WAIT_MS = 25_000  # generous: polling runs every 2-3 s and the pipeline needs a few ticks
CUSTOM_IDS = [f"browser/{i}" for i in range(1, 6)]
FAILING = "browser/3"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's chromium, headless; skipped when absent (failed under CI=true)."""
    require_service(f"chromium at {CHROMIUM}", HAVE_CHROMIUM)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def visit(page: Page, url: str) -> None:
    """Open a page and check it is served as HTML (anything else is shown as source text)."""
    response = await page.goto(url)
    assert response is not None and response.ok, f"GET {url} answered {response and response.status}"
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("text/html"), f"GET {url} is served as {content_type!r}, not text/html"


async def click_between_polls(page: Page, button: Locator) -> None:
    """Click right after a live fragment was swapped, so that no poll replaces the button while
    its request is in flight (that loses the toast: see test_action_toast_survives_a_poll_swap)."""
    await page.evaluate(
        """() => new Promise((resolve, reject) => {
            document.body.addEventListener("htmx:afterSettle", resolve, {once: true});
            setTimeout(() => reject(new Error("no htmx swap within 10 s")), 10000);
        })"""
    )
    await button.click()


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


async def mark_page(page: Page) -> None:
    """Tag the current document; still_same_page() proves no reload or navigation happened since."""
    await page.evaluate("window.__marker = 1")


async def still_same_page(page: Page) -> None:
    assert await page.evaluate("window.__marker") == 1, "the page was reloaded"


async def test_operator_flow_in_the_browser(
    sqlite_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    receiver.status_for[FAILING] = 500
    settings = fast_settings(
        sqlite_url, inference.url + "/v1", local_batch_max_age_seconds=3600, delivery_max_attempts=2
    )
    async with chromium() as browser, start_app(settings) as app:
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(WAIT_MS)
        page_errors: list[str] = []
        server_errors: list[str] = []

        async def accept(dialog: Dialog) -> None:
            await dialog.accept()

        def on_response(response: Response) -> None:
            if response.status >= 500:
                server_errors.append(f"{response.status} {response.request.method} {response.url}")

        page.on("dialog", accept)
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        page.on("response", on_response)

        # 1. The dashboard, before anything happened.
        await visit(page, app.url + "/")
        await expect(page.locator("h1")).to_have_text("Dashboard")
        await expect(page.locator("#live")).to_be_visible()
        await shot(page, "01-dashboard")

        # 2-3. The batch list is open while requests arrive; their batch shows up live.
        await visit(page, app.url + "/batches")
        await expect(page.locator("#results td.empty")).to_contain_text("No batches")
        await mark_page(page)
        for custom_id in CUSTOM_IDS:
            delivery = {"type": "webhook", "webhook_url": receiver.url + "/hook"}
            answer = await app.client.post("/api/requests", json=request_payload(custom_id, delivery))
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

        # 4. Close it now; the toast confirms, and the row runs to done without a reload.
        await click_between_polls(page, row.locator("button.act", has_text="Close now"))
        await expect(page.locator("#toast .toast.ok")).to_contain_text(f"Batch {batch_id} closes now")
        await expect(row).to_have_attribute("data-status", "done", timeout=WAIT_MS)
        await expect(row.locator(".badge")).to_have_text("done")
        await expect(row.locator("button.act", has_text="Close now")).to_have_count(0)
        await expect(row.locator("button.act", has_text="Redeliver failed")).to_be_visible()
        await still_same_page(page)
        await shot(page, "03-batches-done")

        # 5. The batch detail: timeline, deliveries legend, and its input file.
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

        # 6. Requests: the search box filters live; the failing one ends delivery_failed.
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

        # 7. The receiver recovers; Redeliver sends it again and the page follows live.
        receiver.status_for.pop(FAILING)
        await click_between_polls(page, page.locator("#live .actions button.act", has_text="Redeliver"))
        await expect(page.locator("#toast .toast.ok")).to_contain_text("queued again")
        await expect(page.locator('#attempts tbody tr[data-outcome="success"]')).to_have_count(
            1, timeout=WAIT_MS
        )
        await expect(page.locator("#delivery-status")).to_have_text("delivered", timeout=WAIT_MS)
        await expect(attempts).to_have_count(3)
        await still_same_page(page)
        assert len(receiver.successes(FAILING)) == 1
        await shot(page, "07-request-redelivered")

        # 8. Settings: an invalid value is refused with its reason, a valid one is saved.
        await visit(page, app.url + "/settings")
        field = page.locator('#settings input[name="delivery_max_attempts"]')
        await expect(field).to_have_value("2")
        await shot(page, "08-settings")
        save = page.locator("#settings button.act", has_text="Save")
        await field.fill("0")
        await save.click()
        await expect(page.locator("#toast .toast.bad")).to_contain_text("delivery_max_attempts")
        await shot(page, "09-settings-refused")
        await field.fill("5")
        await save.click()
        await expect(page.locator("#toast .toast.ok")).to_contain_text("Settings saved")
        await expect(page.locator("#toast .toast.bad")).to_have_count(0)
        await shot(page, "10-settings-saved")
        await page.reload()
        await expect(field).to_have_value("5")

        # 9. The dashboard again, now with numbers.
        await visit(page, app.url + "/")
        await expect(page.locator("#in-flight")).to_have_text("0", timeout=WAIT_MS)
        await expect(page.locator("#success-rate")).not_to_have_text("—", timeout=WAIT_MS)
        await shot(page, "11-dashboard-after")

        assert page_errors == []
        assert server_errors == []


async def test_action_toast_survives_a_poll_swap(
    sqlite_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    """A slow action is not undone by the live poll: the poll waits (hx-sync), the toast shows.

    Without that, a poll landing while the action is in flight swaps its button out of the page
    and htmx drops the answer (htmx:targetError for #toast): no toast, no refresh.
    """
    settings = fast_settings(sqlite_url, inference.url + "/v1", local_batch_max_age_seconds=3600)
    async with chromium() as browser, start_app(settings) as app:
        page = await browser.new_page()
        answer = await app.client.post("/api/requests", json=request_payload("slow/1", {"type": "none"}))
        assert answer.status_code == 202, answer.text
        await visit(page, app.url + "/batches")
        row = page.locator('#results tbody tr[data-status="building"]')
        await expect(row).to_have_count(1, timeout=WAIT_MS)

        swaps: list[str] = []
        await page.expose_function("resultsSwapped", lambda: swaps.append("swap"))
        await page.evaluate(
            """document.body.addEventListener("htmx:afterSettle", (e) => {
                if (e.target.id === "results") window.resultsSwapped();
            })"""
        )

        async def slow_action(route: Route) -> None:
            # The action takes longer than a poll interval (3 s): the scenario, not a wait.
            swaps.clear()
            await asyncio.sleep(SLOW_ACTION_SECONDS)
            held_back = not swaps
            await route.continue_()
            outcomes.append(held_back)

        outcomes: list[bool] = []
        await page.route("**/batches/*/close", slow_action)
        await row.locator("button.act", has_text="Close now").click()
        await expect(page.locator("#toast .toast.ok")).to_contain_text("closes now", timeout=WAIT_MS)
        assert outcomes == [True], "a poll swapped the table while the action was in flight"
