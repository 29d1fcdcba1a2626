"""Dependencies failing under load (issue 13): the app keeps running, says so in /health, and
catches up without a restart."""

from __future__ import annotations

import json
from typing import Any

import pytest

from testkit import (
    RunningApp,
    StartApp,
    fast_settings,
    migrate,
    pipeline_state,
    postgres_database,
    wait_until,
)
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.tcp_proxy import TcpProxy

COUNT = 60


@pytest.mark.postgres
async def test_postgresql_gone_mid_run_then_back(
    inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    inference.delay_seconds = 0.02
    async with postgres_database() as direct_url, TcpProxy("127.0.0.1", 5432) as proxy:
        await migrate(direct_url)
        proxied = direct_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        settings = fast_settings(proxied, inference.url + "/v1", local_concurrency=2, batch_max_requests=20)
        async with start_app(settings) as app:
            for n in range(COUNT):
                assert (await app.submit(f"db-{n:03d}", receiver.url + "/hook")).status_code == 202
            await receiver.wait_for(lambda r: len(r.successes()) >= 5, timeout=30)

            await proxy.pause()  # every connection dropped, new ones refused
            down = await app.client.get("/health")
            assert down.status_code == 503 and down.json()["database"] != "ok"
            refused = await app.submit("while-down", receiver.url + "/hook")
            assert refused.status_code == 503, refused.text  # not accepted, so nothing to lose
            assert refused.json()["errors"][0]["code"] == "database_unavailable"
            assert refused.headers["retry-after"] == "5"
            await wait_until(lambda: inference.in_flight == 0, timeout=30, what="runs wound down")

            await proxy.resume()
            try:
                await receiver.wait_for(
                    lambda r: {x.custom_id for x in r.successes()} >= {f"db-{n:03d}" for n in range(COUNT)},
                    timeout=90,
                )
            except TimeoutError as exc:
                # Failed once in CI (2026-12-06: db-024.. never delivered) and never in 109 runs
                # here since: say where the work stopped, so the next failure explains itself.
                raise AssertionError(f"{exc}\n{await pipeline_state.describe(app.db, app.worker)}") from exc
            assert (await app.client.get("/health")).status_code == 200


async def _local_status(app: RunningApp) -> dict[str, Any]:
    body = (await app.client.get("/health")).json()
    return next(b for b in body["backends"] if b["name"] == "local")


@pytest.mark.parametrize("trouble", ["answers 500", "hangs"])
async def test_inference_server_down_then_back_fails_no_request(
    trouble: str,
    database_url: str,
    inference: InferenceStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
) -> None:
    # The whole server fails every call (a crashed engine answering 500, or one that stopped
    # answering at all): lines wait for it instead of failing after their few retries, /health
    # says so, and once it answers again every request is delivered as a success.
    if trouble == "answers 500":
        inference.down_status = 500
    else:
        inference.answering.clear()
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        local_max_retries=1,
        local_timeout_seconds=0.5,
        local_outage_max_seconds=300,
        batch_max_requests=5,
    )
    ids = {f"down-{n:02d}" for n in range(12)}
    async with start_app(settings) as app:
        for custom_id in sorted(ids):
            assert (await app.submit(custom_id, receiver.url + "/hook")).status_code == 202

        async def reported_down() -> bool:
            return "failing since" in (await _local_status(app))["detail"]

        await wait_until(reported_down, timeout=30, what="/health to report the outage")
        assert not (await _local_status(app))["reachable"]
        assert "every call failing since" in (await app.client.get("/")).text  # the dashboard
        assert (await app.client.get("/health")).status_code == 200  # a backend is not fatal
        assert not receiver.received, "a request was failed and delivered during the outage"

        inference.down_status = None
        inference.answering.set()
        await receiver.wait_for(lambda r: {x.custom_id for x in r.successes()} >= ids, timeout=60)
        results = [json.loads(x.body) for x in receiver.successes()]
        assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in results), results

        async def reported_up() -> bool:
            return (await _local_status(app))["reachable"]

        await wait_until(
            reported_up, timeout=30, what="/health to report the server back"
        )  # probes are cached 10 s


async def test_one_request_the_server_chokes_on_fails_alone(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # A 500 for one request while the server is otherwise fine is that request's own failure:
    # it must not wait out LOCAL_OUTAGE_MAX_SECONDS.
    inference.always_fail.add("choke")
    settings = fast_settings(
        database_url, inference.url + "/v1", local_max_retries=1, local_outage_max_seconds=3600
    )
    async with start_app(settings) as app:
        assert (await app.submit("choke", receiver.url + "/hook")).status_code == 202
        await receiver.wait_for(lambda r: len(r.received) >= 1, timeout=30)
    assert json.loads(receiver.received[0].body)["error"]["code"] == "server_error"


async def test_lines_stop_waiting_for_a_server_down_past_the_bound(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # No batch waits forever: past LOCAL_OUTAGE_MAX_SECONDS the lines fail with their own error.
    inference.down_status = 503
    settings = fast_settings(
        database_url, inference.url + "/v1", local_max_retries=1, local_outage_max_seconds=1.5
    )
    ids = {"late-1", "late-2", "late-3"}
    async with start_app(settings) as app:
        for custom_id in sorted(ids):
            assert (await app.submit(custom_id, receiver.url + "/hook")).status_code == 202
        await receiver.wait_for(lambda r: {x.custom_id for x in r.received} >= ids, timeout=30)
    errors = {json.loads(x.body)["error"]["code"] for x in receiver.received}
    assert errors == {"server_error"}
    assert inference.refused > len(ids) * 2, "the lines did not wait for the server"
