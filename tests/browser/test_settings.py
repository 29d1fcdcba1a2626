"""Journey: the operator edits a setting; an invalid value is refused with its reason, a valid one
is saved and survives a reload."""

from __future__ import annotations

from playwright.async_api import Page, expect

from testkit import RunningApp
from testkit.browser import PageErrors, shot, visit


async def test_an_invalid_setting_is_refused_and_a_valid_one_saved(
    operator_app: RunningApp, page: Page, page_errors: PageErrors
) -> None:
    await visit(page, operator_app.url + "/settings")
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

    page_errors.assert_none()
