"""One hanging receiver holds up nobody else (issue 28, part 1): every send is recorded when it
ends and its slot refilled at once, and one destination never takes more than its share of the
slots. Before, a chunk's attempts were recorded only when its slowest send ended, and the next
chunk waited for it."""

from __future__ import annotations

import time
from typing import Any

from testkit import RunningApp, StartApp, fast_settings, wait_until
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.serve import serve

HANG_SECONDS = 30.0  # longer than the test: the hanging sends are in flight throughout
TIMEOUT_SECONDS = 25.0


async def delivery_of(app: RunningApp, custom_id: str) -> dict[str, Any]:
    answer = await app.client.get(f"/api/requests/{custom_id}")
    assert answer.status_code == 200, answer.text
    delivery: dict[str, Any] = answer.json()["delivery"] or {"status": None, "attempts": 0}
    return delivery


async def test_a_hanging_receiver_holds_up_no_other_delivery(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    hanging = WebhookReceiver()
    hanging.delay_for.update({f"hang-{n}": HANG_SECONDS for n in range(6)})
    receiver.status_for.update({"redirected": 302, "unauthorized": 401})
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        webhook_timeout_seconds=TIMEOUT_SECONDS,
        delivery_concurrency=8,
        delivery_destination_concurrency=2,
    )
    async with serve(hanging, graceful_timeout=0) as hanging_url, start_app(settings) as app:
        # Six hanging deliveries (more than their destination's share), then others in the same
        # batch, then more after the hanging sends began.
        first = ["redirected", "unauthorized", *(f"early-{n}" for n in range(5))]
        for n in range(6):
            assert (await app.submit(f"hang-{n}", hanging_url + "/hook")).status_code == 202
        for custom_id in first:
            assert (await app.submit(custom_id, receiver.url + "/hook")).status_code == 202
        await wait_until(lambda: len(hanging.received) >= 2, timeout=30, what="the hanging sends began")
        began = time.monotonic()
        later = [f"late-{n}" for n in range(10)]
        for custom_id in later:
            assert (await app.submit(custom_id, receiver.url + "/hook")).status_code == 202

        async def all_recorded() -> bool:
            states = [await delivery_of(app, c) for c in [*first, *later]]
            return all(s["attempts"] >= 1 for s in states)

        await wait_until(all_recorded, timeout=20, what="every other delivery recorded")
        assert time.monotonic() - began < TIMEOUT_SECONDS  # none waited for a hanging send to end
        for custom_id in [*(f"early-{n}" for n in range(5)), *later]:
            assert (await delivery_of(app, custom_id))["status"] == "delivered", custom_id
        assert (await delivery_of(app, "redirected"))["attempt_log"][0]["http_status"] == 302
        assert (await delivery_of(app, "unauthorized"))["attempt_log"][0]["http_status"] == 401
        # The hanging destination had its share of the slots and no more; its sends are still
        # in flight, unrecorded.
        assert len(hanging.received) == 2
        assert [(await delivery_of(app, f"hang-{n}"))["attempts"] for n in range(6)] == [0] * 6
