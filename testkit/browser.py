"""Driving the operator UI in Debian's chromium through playwright (never playwright's own browser
download): launching it, opening pages, clicking between polls, screenshots and page markers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, Dialog, Locator, Page, Response, async_playwright

from testkit.databases import require_service

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
SCREENSHOTS = Path(__file__).resolve().parents[1] / "tests" / "artifacts" / "screenshots"
WAIT_MS = 25_000  # generous: polling runs every 2-3 s and the pipeline needs a few ticks
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1400, "height": 900}
# The journeys' requests, and the one whose receiver answers 500.
CUSTOM_IDS = [f"browser/{i}" for i in range(1, 6)]
FAILING = "browser/3"


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


@dataclass
class PageErrors:
    """Script errors and 5xx answers a page met; a journey ends by asserting there were none."""

    script: list[str] = field(default_factory=list)
    server: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        async def accept(dialog: Dialog) -> None:  # confirm() dialogs are answered yes
            await dialog.accept()

        def on_response(response: Response) -> None:
            if response.status >= 500:
                self.server.append(f"{response.status} {response.request.method} {response.url}")

        page.on("dialog", accept)
        page.on("pageerror", lambda exc: self.script.append(str(exc)))
        page.on("response", on_response)

    def assert_none(self) -> None:
        assert self.script == []
        assert self.server == []


async def visit(page: Page, url: str) -> None:
    """Open a page and check it is served as HTML (anything else is shown as source text)."""
    response = await page.goto(url)
    assert response is not None and response.ok, f"GET {url} answered {response and response.status}"
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("text/html"), f"GET {url} is served as {content_type!r}, not text/html"


async def click_between_polls(page: Page, button: Locator) -> None:
    """Click right after a live fragment was swapped, so that no poll replaces the button while
    its request is in flight (that loses the toast: see tests/browser/test_actions.py)."""
    await page.evaluate(
        """() => new Promise((resolve, reject) => {
            document.body.addEventListener("htmx:afterSettle", resolve, {once: true});
            setTimeout(() => reject(new Error("no htmx swap within 10 s")), 10000);
        })"""
    )
    await button.click()


async def shot(page: Page, name: str) -> None:
    """A full-page screenshot in tests/artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


async def mark_page(page: Page) -> None:
    """Tag the current document; still_same_page() proves no reload or navigation happened since."""
    await page.evaluate("window.__marker = 1")


async def still_same_page(page: Page) -> None:
    assert await page.evaluate("window.__marker") == 1, "the page was reloaded"
