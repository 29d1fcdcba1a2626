"""A webhook receiver down for a long stretch (issue 13): refusing connections, then answering
503. The app, a child process as users run it, keeps retrying; /health (still 200) and the
dashboard name the failing host, by host and port only; once the receiver is back every delivery
arrives and ends delivered, and /health is clear again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from app.core.read.failing import destination_of, host_port, safe_error
from app.db.models import Delivery
from app.db.session import Database
from testkit import request_payload, wait_until, webhook
from testkit.processes import app_env, app_process
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.tcp_proxy import TcpProxy

COUNT = 20
TOKEN = "s3cret-token"  # in the URL's path and query: never to be shown


async def failing(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    answer = await client.get("/health")
    assert answer.status_code == 200, answer.text  # a receiver down is not the gateway down
    assert TOKEN not in answer.text and "/hook" not in answer.text
    return answer.json()["failing_destinations"]


async def deliveries_by_status(db: Database) -> dict[str, int]:
    async with db.transaction() as session:
        rows = await session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return {status: int(n) for status, n in rows}


async def test_receiver_down_for_long_is_shown_then_caught_up(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    env = app_env(
        database_url,
        inference.url,
        tmp_path,
        # Enough attempts to outlast the outage, with short backoffs so the test is quick.
        DELIVERY_MAX_ATTEMPTS="100",
        DELIVERY_RETRY_SCHEDULE="0.1s,0.2s,0.4s,0.8s,1s",  # the last wait repeats
        # No breaker: every delivery keeps retrying on its own. With one, the deliveries claimed
        # after it opened stay pending (held, not retrying), so how many /health counts would
        # depend on how the results were stored and claimed, and its probes back off to half a
        # minute. test_breaker.py tests the holding itself.
        DELIVERY_BREAKER_FAILURES="0",
    )
    ids = {f"rd-{n:02d}" for n in range(COUNT)}
    db = Database(database_url)
    try:
        async with (
            TcpProxy("127.0.0.1", httpx.URL(receiver.url).port) as proxy,  # type: ignore[attr-defined]
            app_process(env) as (_process, url),
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            await proxy.pause()  # the receiver is down: connections refused
            host = f"127.0.0.1:{proxy.port}"
            hook = f"http://{host}/hook/{TOKEN}?token={TOKEN}"
            for custom_id in sorted(ids):
                answer = await client.post("/api/requests", json=request_payload(custom_id, webhook(hook)))
                assert answer.status_code == 202, answer.text

            last: list[Any] = []  # what /health said last, for a timeout's message

            async def shown(error: str) -> bool:
                found = {d["destination"]: d for d in await failing(client)}
                last[:] = [found.get(host)]
                d = last[0]
                return d is not None and d["retrying"] == COUNT and error in (d["last_error"] or "")

            await wait_until(
                lambda: shown("Connect"),
                timeout=60,
                what=lambda: f"/health to name the refusing host (it said {last})",
            )
            [listed] = await failing(client)
            assert listed["channel"] == "webhook" and listed["last_failure_at"]
            dashboard = (await client.get("/")).text
            assert host in dashboard and f"{COUNT} deliveries retrying" in dashboard, dashboard
            assert TOKEN not in dashboard

            # Up again but answering 503 to everything: still failing, with the new error.
            receiver.down_status = 503
            await proxy.resume()
            await wait_until(
                lambda: shown("receiver answered 503"),
                timeout=60,
                what=lambda: f"/health to show the 503s (it said {last})",
            )
            assert not receiver.successes()
            assert (await deliveries_by_status(db)).get("delivered", 0) == 0

            receiver.down_status = None  # back: everything goes out, no restart
            await receiver.wait_for(lambda r: {x.custom_id for x in r.successes()} >= ids, timeout=60)

            async def all_delivered() -> bool:
                return await deliveries_by_status(db) == {"delivered": COUNT}

            await wait_until(all_delivered, timeout=30, what="every delivery to end delivered")

            async def clear() -> bool:
                return await failing(client) == []

            await wait_until(clear, timeout=30, what="/health to be clear again")  # cached for 5 s
            assert "no delivery retrying" in (await client.get("/")).text
    finally:
        await db.dispose()


def test_a_destination_is_shown_by_host_and_port_only() -> None:
    assert host_port("https://user:pw@hooks.example.com/t/abc?token=x") == "hooks.example.com:443"
    assert host_port("http://[::1]:8080/hook") == "[::1]:8080"
    assert destination_of(None, "results", None) == "queue results"
    assert destination_of(None, None, "events") == "exchange events"
    error = "Redirect response '302' for url 'http://h.example:81/hook?token=x'"
    assert safe_error(error) == "Redirect response '302' for url 'h.example:81'"
