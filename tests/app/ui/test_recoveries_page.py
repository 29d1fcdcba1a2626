"""The Recoveries page (issue 28 part 4), on both databases: the forms start a recover and a
replay, the live fragment shows their progress, and bad input comes back as an error toast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.db.models import Delivery
from app.ground.statuses import DeliveryStatus
from app.net.destinations import destination_of
from testkit import RunningApp, wait_until, webhook
from testkit.operator_ui import HX, assert_toast
from testkit.standins.receiver import WebhookReceiver


async def test_the_page_starts_a_recover_and_shows_its_progress(
    ui: RunningApp, receiver: WebhookReceiver
) -> None:
    target = webhook(receiver.url + "/hook")  # type: ignore[attr-defined]
    key = destination_of(target)
    failed = {
        "request_id": None,
        "channel": "webhook",
        "target": target,
        "destination": key,
        "status": DeliveryStatus.DELIVERY_FAILED,
        "attempts": 2,
        "total_attempts": 2,
        "created_at": datetime.now(UTC),
    }
    async with ui.db.transaction() as session:
        session.add_all([Delivery(**failed), Delivery(**failed)])

    page = (await ui.client.get("/recoveries")).text
    assert 'id="recover-form"' in page and 'id="replay-form"' in page and 'href="/recoveries"' in page
    assert "No recoveries yet." in page
    filled = (await ui.client.get("/recoveries", params={"destination": key})).text
    assert f'value="{key}"' in filled

    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    answer = await ui.client.post("/recoveries", data={"destination": key, "since": since}, headers=HX)
    assert_toast(answer, 200, "ok", "Recover #1 started: 2 to go.")

    async def shown_done() -> bool:
        live = (await ui.client.get("/recoveries", headers=HX)).text
        return 'data-recovery="1" data-status="done"' in live and "2/2" in live

    await wait_until(shown_done, timeout=15, what="the live fragment to show recovery 1 done, 2/2")
    async with ui.db.transaction() as session:
        statuses = set((await session.scalars(select(Delivery.status))).all())
    assert DeliveryStatus.DELIVERY_FAILED not in statuses

    replay = {"since": since, "webhook_url": "https://new.example.com/hook"}
    answer = await ui.client.post("/recoveries/replay", data=replay, headers=HX)
    assert_toast(answer, 200, "ok", "Replay #2 started: 0 to go.")
    ended = await ui.client.post("/recoveries/1/cancel", headers=HX)
    assert_toast(ended, 409, "bad", "Recovery has ended")
    full = (await ui.client.get("/recoveries")).text
    assert (
        'data-recovery="2" data-status="done"' in full and "<code>https://new.example.com/hook</code>" in full
    )
    assert full.index('data-recovery="2"') < full.index('data-recovery="1"')  # newest first

    refused = await ui.client.post(
        "/recoveries/replay", data={"batch_id": "7", "webhook_url": "ftp://nowhere"}, headers=HX
    )
    assert_toast(refused, 422, "bad", "")
    missing = await ui.client.post(
        "/recoveries/replay", data={"batch_id": "7", "webhook_url": "https://hooks.example.com/h"}, headers=HX
    )
    assert_toast(missing, 404, "bad", "Batch not found")
