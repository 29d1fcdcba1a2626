"""Journey: with a key set, the operator logs in (a wrong key first), acts, sees a request made
without the CSRF token refused, and logs out."""

from __future__ import annotations

from playwright.async_api import Page, expect

from testkit import API_KEYS, RunningApp
from testkit.browser import PageErrors, shot

KEY = API_KEYS[0]


async def test_log_in_act_and_log_out(keyed: RunningApp, page: Page, page_errors: PageErrors) -> None:
    await page.goto(keyed.url + "/settings")
    await expect(page).to_have_url(keyed.url + "/login?next=/settings")
    await page.fill('#login input[name="key"]', "not-the-key")
    await page.click("#login button")
    await expect(page.locator("#login-error")).to_contain_text("not valid")
    await page.fill('#login input[name="key"]', KEY)
    await page.click("#login button")
    await expect(page).to_have_url(keyed.url + "/settings")
    await shot(page, "20-logged-in")

    field = page.locator('#settings input[name="delivery_max_attempts"]')
    await field.fill("4")
    await page.locator("#settings button.act", has_text="Save").click()
    await expect(page.locator("#toast .toast.ok")).to_contain_text("Settings saved")

    # The same action without the token (what a forged cross-site post amounts to) is refused.
    status = await page.evaluate("fetch('/settings/reset', {method: 'POST'}).then(r => r.status)")
    assert status == 403
    await page.reload()
    await expect(field).to_have_value("4")

    await page.click("#logout")
    await expect(page).to_have_url(keyed.url + "/login")
    await page.goto(keyed.url + "/")
    await expect(page).to_have_url(keyed.url + "/login?next=/")
    page_errors.assert_none()
