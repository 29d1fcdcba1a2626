"""The destinations page and the dashboard's destinations card (issue 28, part 2): the operator
sees each destination's breaker, sets its limits, pauses and resumes it."""

from __future__ import annotations

from testkit import RunningApp, wait_until
from testkit.operator_ui import HX, assert_toast
from testkit.standins.receiver import WebhookReceiver


async def test_the_operator_sets_limits_pauses_and_resumes_a_destination(
    ui: RunningApp, receiver: WebhookReceiver
) -> None:
    empty = await ui.client.get("/destinations")
    assert empty.status_code == 200 and "No destination has failed" in empty.text
    saved = await ui.client.post(
        "/destinations",
        data={"destination": receiver.url + "/hook", "concurrency": "3", "rate_per_second": "2.5"},
        headers=HX,
    )
    assert_toast(saved, 200, "ok", f"Limits of {receiver.url} saved")
    [row] = (await ui.client.get("/api/destinations")).json()["data"]
    assert (row["concurrency"], row["rate_per_second"]) == (3, 2.5)
    listed = (await ui.client.get("/destinations", headers=HX)).text
    assert f"<code>{receiver.url}</code>" in listed and 'hx-post="/destinations/' in listed

    assert_toast(
        await ui.client.post(
            "/destinations", data={"destination": "ftp://x", "concurrency": "2"}, headers=HX
        ),
        422,
        "bad",
        "a destination is a webhook URL",
    )
    assert_toast(
        await ui.client.post(
            "/destinations", data={"destination": receiver.url, "concurrency": "lots"}, headers=HX
        ),
        422,
        "bad",
        "concurrency is not a number",
    )

    assert_toast(await ui.client.post(f"/destinations/{row['id']}/pause", headers=HX), 200, "ok", "paused")
    dashboard = (await ui.client.get("/", headers=HX)).text
    assert "held-destination" in dashboard and "paused until resumed" in dashboard
    assert 'badge bad">open' in (await ui.client.get("/destinations", headers=HX)).text

    assert_toast(await ui.client.post(f"/destinations/{row['id']}/resume", headers=HX), 200, "ok", "resumed")

    async def closed() -> bool:
        return (await ui.client.get("/api/destinations")).json()["data"][0]["breaker"] == "closed"

    await wait_until(closed, timeout=5, what="the breaker closed")
    assert "held-destination" not in (await ui.client.get("/", headers=HX)).text
