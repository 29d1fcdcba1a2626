"""Dependencies failing under load (issue 13): the app keeps running, says so in /health, and
catches up without a restart."""

from __future__ import annotations

import pytest

from tests.standins.inference import InferenceStandin
from tests.standins.receiver import WebhookReceiver
from tests.standins.tcp_proxy import TcpProxy
from tests.support import StartApp, fast_settings, migrate, postgres_database, wait_until

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
            await receiver.wait_for(
                lambda r: {x.custom_id for x in r.successes()} >= {f"db-{n:03d}" for n in range(COUNT)},
                timeout=90,
            )
            assert (await app.client.get("/health")).status_code == 200
