"""Local runs survive their own faults without running twice or for ever (issue 13 items 4, 6):
a run is counted when it is claimed, so runs that die with their process end the batch after
MAX_RUN_FAILURES; and a passing database error does not stop the lease heartbeat."""

from __future__ import annotations

import logging

import pytest

from app.core.runs.lines import LINES_PAGE
from app.core.runs.local import MAX_RUN_FAILURES
from testkit import RunningApp, StartApp, fast_settings, migrate, postgres_database, wait_until
from testkit.faults import kill_runs
from testkit.openai_sdk import line, new_batch, sdk, until_status, upload
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.tcp_proxy import TcpProxy


async def batch_of(app: RunningApp, custom_id: str) -> dict:
    detail = (await app.client.get(f"/api/requests/{custom_id}")).json()
    return (await app.client.get(f"/api/batches/{detail['batch_id']}")).json()  # type: ignore[no-any-return]


async def test_runs_that_die_with_their_process_end_the_batch(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # The line never finishes, and each run of it dies with its process.
    inference.delay_for["stuck"] = 120
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        await app.submit("stuck", receiver.url + "/hook")
        await kill_runs(app, inference, "stuck", MAX_RUN_FAILURES)
        await receiver.wait_for(lambda r: len(r.successes("stuck")) == 1, timeout=30)
        assert receiver.successes("stuck")[0].json["error"]["code"] == "internal_error"
        batch = await batch_of(app, "stuck")
        assert batch["status"] == "failed" and "run failed 3 times" in batch["events"][-1]["reason"]
        assert inference.calls_by_key["stuck"] == MAX_RUN_FAILURES  # never a fourth run


@pytest.mark.postgres
async def test_a_passing_database_error_does_not_stop_the_heartbeat(
    inference: InferenceStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Longer than the lease: it runs on renewals only. A 6 s lease leaves room for the failed
    # renewal to be noticed and the proxy resumed before the lease runs out, on a loaded machine
    # too (with 3 s it once ran out in CI and another claim ran the line again).
    inference.delay_for["slow"] = 9
    caplog.set_level(logging.WARNING, logger="app.core.rules.leases")
    async with postgres_database() as direct_url, TcpProxy("127.0.0.1", 5432) as proxy:
        await migrate(direct_url)
        proxied = direct_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        async with start_app(fast_settings(proxied, inference.url + "/v1", lease_seconds=6)) as app:
            await app.submit("slow", receiver.url + "/hook")
            await wait_until(lambda: inference.in_flight == 1, timeout=20, what="the run started")
            await proxy.pause()  # the database is gone until a renewal has failed

            def renewal_failed() -> bool:
                return any("could not renew the lease" in r.getMessage() for r in caplog.records)

            await wait_until(renewal_failed, timeout=10, what="a renewal failed")
            await proxy.resume()
            await receiver.wait_for(lambda r: len(r.successes("slow")) == 1, timeout=30)
            assert receiver.successes("slow")[0].json["error"] is None
            assert inference.calls_by_key["slow"] == 1  # the run kept its lease: nothing ran twice
            assert (await batch_of(app, "slow"))["status"] == "done"


async def test_a_batch_of_several_pages_runs_each_line_once(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    # A run reads its lines a page at a time (LINES_PAGE); across the page edges no line may be
    # skipped or run twice.
    total = 2 * LINES_PAGE + 7
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        client = sdk(app)
        uploaded = await upload(client, *(line(f"p-{i:05d}") for i in range(total)))
        created = await new_batch(client, uploaded.id)
        done = await until_status(client, created.id, "completed", within=120)
        assert done.request_counts is not None and done.request_counts.completed == total
    assert sorted(inference.calls_by_key.items()) == [(f"p-{i:05d}", 1) for i in range(total)]
