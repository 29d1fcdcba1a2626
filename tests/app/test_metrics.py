"""/metrics (issue 14, item 7): scraped and parsed with prometheus-client's own parser after a
pipeline run, it shows the counts that run produced."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit import StartApp, fast_settings, wait_until
from testkit.apps import RunningApp
from testkit.faults import kill_runs
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(app: RunningApp, **headers: str) -> Samples:
    answer = await app.client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_pipeline_run_shows_in_the_metrics(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # Counters belong to the process, which other tests share: compare with a scrape before.
    inference.status_for["refused"] = 400
    inference.delay_for["slow"] = 3.0
    settings = fast_settings(database_url, inference.url + "/v1", lease_seconds=1)
    async with start_app(settings) as app:
        before = await scrape(app)
        for custom_id in ("m-1", "m-2", "m-3", "refused", "slow"):
            assert (await app.submit(custom_id, receiver.url + "/hook")).status_code == 202

        async def others_stored() -> bool:
            # Before the "kill": a run that lost its batch stores nothing more (issue 24), so
            # results still unstored then would run again and count twice.
            answers = [await app.client.get(f"/api/requests/{cid}") for cid in ("m-1", "m-2", "m-3")]
            return all(a.json()["status"] == "succeeded" for a in answers)

        await wait_until(others_stored, timeout=15, what="m-1 to m-3 stored")
        await kill_runs(app, inference, "slow", 1)  # its lease runs out: another claim takes over
        await receiver.wait_for(lambda r: len(r.successes()) >= 5, timeout=30)

        after: Samples = {}

        async def stored() -> bool:
            after.update(await scrape(app))  # the stored counts are up to 5 s old
            # The receiver has the 5th POST a moment before its attempt is recorded and counted.
            attempts = ("batchgate_delivery_attempts_total", {"channel": "webhook", "outcome": "success"})
            sent = value(after, attempts[0], **attempts[1]) - value(before, attempts[0], **attempts[1])
            return (
                value(after, "batchgate_requests", status="succeeded") == 4
                and value(after, "batchgate_deliveries", status="delivered") == 5
                and sent >= 5
            )

        await wait_until(stored, timeout=15, what="the stored counts in /metrics")

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("batchgate_requests_accepted_total", origin="api") == 5
    # "slow" ran twice: its first run was stopped when its lease was taken over.
    assert grew("batchgate_backend_call_seconds_count", backend="local", outcome="ok") == 4
    assert grew("batchgate_backend_call_seconds_count", backend="local", outcome="cancelled") == 1
    assert grew("batchgate_backend_call_seconds_count", backend="local", outcome="error") == 1
    assert grew("batchgate_lease_takeovers_total", table="batches") >= 1
    assert grew("batchgate_delivery_attempts_total", channel="webhook", outcome="success") == 5
    assert value(after, "batchgate_requests", status="failed") == 1
    assert value(after, "batchgate_deliveries", status="delivered") == 5
    assert value(after, "batchgate_batches", status="done") >= 1
    assert value(after, "batchgate_database_up") == 1


@pytest.mark.parametrize("public", [True, False])
async def test_metrics_need_a_key_only_when_told(public: bool, start_app: StartApp, sqlite_url: str) -> None:
    settings = fast_settings(sqlite_url, api_keys="metrics-key", metrics_public=public)
    async with start_app(settings) as app:
        answer = await app.client.get("/metrics")
        assert answer.status_code == (200 if public else 401)
        await scrape(app, authorization="Bearer metrics-key")
