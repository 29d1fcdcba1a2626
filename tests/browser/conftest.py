"""Browser fixtures: Debian's chromium, a watched page in it, and the app the operator uses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page

from testkit import RunningApp, StartApp, fast_settings
from testkit.browser import VIEWPORT, WAIT_MS, PageErrors, chromium
from testkit.standins.inference import InferenceStandin


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
async def page(browser: Browser, page_errors: PageErrors) -> AsyncIterator[Page]:
    """A page that accepts confirm() dialogs and records script errors and 5xx answers."""
    opened = await browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
    opened.set_default_timeout(WAIT_MS)
    page_errors.watch(opened)
    yield opened
    await opened.close()


@pytest.fixture
async def operator_app(
    browser: Browser, sqlite_url: str, inference: InferenceStandin, start_app: StartApp
) -> AsyncIterator[RunningApp]:
    """The app with batches that stay `building` until closed (so the operator closes them) and
    two delivery attempts."""
    settings = fast_settings(
        sqlite_url, inference.url + "/v1", local_batch_max_age_seconds=3600, delivery_max_attempts=2
    )
    async with start_app(settings) as app:
        yield app
