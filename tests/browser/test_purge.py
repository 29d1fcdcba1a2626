"""Journey: the operator purges old batches now from the settings page; a bad number of days is
refused with its reason, a good one purges and says how much went."""

from __future__ import annotations

from datetime import timedelta

from playwright.async_api import Page, expect
from sqlalchemy import select

from app.db.models import Batch, Request
from app.ground.clock import utcnow
from testkit import RunningApp, new_batch
from testkit.browser import PageErrors, shot, visit


async def test_purge_now_says_what_went(
    operator_app: RunningApp, page: Page, page_errors: PageErrors
) -> None:
    # Ended 10 days ago: the scheduler's own purge (30 days) leaves it to the operator's 5.
    ended = utcnow() - timedelta(days=10)
    async with operator_app.db.transaction() as session:
        batch = new_batch(status="done", request_count=1, finished_at=ended, created_at=ended)
        session.add(batch)
        await session.flush()
        session.add(
            Request(
                custom_id="purge/1",
                origin="api",
                backend="local",
                endpoint="/v1/chat/completions",
                model="stand-in",
                body={"model": "stand-in"},
                body_bytes=20,
                delivery={"type": "none"},
                status="succeeded",
                batch_id=batch.id,
                created_at=ended,
                completed_at=ended,
            )
        )
    await visit(page, operator_app.url + "/settings")
    days = page.locator('#purge input[name="older_than_days"]')
    await expect(days).to_have_value("30")
    purge = page.locator("#purge button.act", has_text="Purge now")
    await days.fill("0")
    await purge.click()  # the confirm() is answered yes
    await expect(page.locator("#toast .toast.bad")).to_contain_text("from 1 to 36500")
    await days.fill("5")
    await purge.click()
    toast = page.locator("#toast .toast.ok")
    await expect(toast).to_contain_text("Purged 1 batches and 1 requests that ended more than 5 days ago")
    await shot(page, "12-settings-purged")
    async with operator_app.db.transaction() as session:
        assert await session.scalar(select(Batch.id)) is None
        assert await session.scalar(select(Request.id)) is None

    page_errors.assert_none()
