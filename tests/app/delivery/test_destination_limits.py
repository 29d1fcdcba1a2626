"""Per-destination limits (issue 28, part 2): an operator's override of one destination's
concurrency and rate, set through the API, holds its deliveries to them; other destinations keep
the defaults."""

from __future__ import annotations

import itertools

from testkit import StartApp, fast_settings
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.serve import serve

COUNT = 12


async def test_a_destination_rate_and_concurrency_override_hold(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    slow = WebhookReceiver()
    slow.delay_for.update({f"one-{n}": 0.2 for n in range(6)})
    settings = fast_settings(database_url, inference.url + "/v1", local_batch_max_age_seconds=1.0)
    async with serve(slow) as slow_url, start_app(settings) as app:
        limited = await app.client.post(
            "/api/destinations", json={"destination": receiver.url, "rate_per_second": 4}
        )
        assert limited.status_code == 200 and limited.json()["rate_per_second"] == 4.0, limited.text
        single = await app.client.post("/api/destinations", json={"destination": slow_url, "concurrency": 1})
        assert single.json()["concurrency"] == 1
        # One batch: every result is ready to go at about the same moment.
        for n in range(COUNT):
            assert (await app.submit(f"rated-{n}", receiver.url + "/hook")).status_code == 202
        for n in range(6):
            assert (await app.submit(f"one-{n}", slow_url + "/hook")).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes()) == COUNT, timeout=30)
        await slow.wait_for(lambda r: len(r.successes()) == 6, timeout=30)

        # 4 a second, after a burst of 4: the last of 12 starts 2 s after the first at the
        # earliest (unlimited, they all start within a few milliseconds).
        arrivals = sorted(r.at for r in receiver.received)
        assert arrivals[-1] - arrivals[0] >= (COUNT - 4) / 4 - 0.1
        # One at a time: each send (0.2 s) starts after the one before ended.
        starts = sorted(r.at for r in slow.received)
        assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.19

        # Back to the defaults: the override is gone from the list, the burst is unlimited again.
        cleared = await app.client.put(f"/api/destinations/{limited.json()['id']}/limits", json={})
        assert cleared.json()["rate_per_second"] is None and cleared.json()["concurrency"] is None


async def test_the_default_rate_holds_every_destination(
    sqlite_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    settings = fast_settings(sqlite_url, inference.url + "/v1", delivery_destination_rate=2.0)
    async with start_app(settings) as app:
        # The default rate applies to a destination with no row of its own.
        for n in range(6):
            assert (await app.submit(f"default-{n}", receiver.url + "/hook")).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes()) == 6, timeout=30)
        arrivals = sorted(r.at for r in receiver.received)
        assert arrivals[-1] - arrivals[0] >= (6 - 2) / 2 - 0.1
