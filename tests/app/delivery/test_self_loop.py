"""Two requests whose webhooks were each other's redeliver URL on Batchgate itself redelivered each
other for ever (issue 29, 733 and 734 attempts in 15 s). A webhook to this server's own address
(HOST:PORT, SELF_ADDRESSES) is refused at intake, and at send when a name resolves to it; and a
request's redeliveries are bounded (REDELIVER_MAX in all, REDELIVER_PER_MINUTE), so a loop that
gets past both ends in a visible delivery_failed."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app.channels.base import Message
from app.channels.webhook import WebhookChannel
from app.db.models import Request, RequestEvent
from testkit import API_KEYS, RunningApp, fast_settings, request_payload, run_app_at_its_port, wait_until
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.tcp_proxy import TcpProxy

KEY = API_KEYS[0]
TERMINAL = ("delivered", "delivery_failed")
PAIR = ("loop-c", "loop-d")
# The loop's calls reach the app this much later than they are sent: a redelivery finds the
# delivery that asked for it recorded as delivered (not still in flight, which would make it a
# no-op and end the loop at once), as it did at the pace of the issue's loop.
SLOW_LINK = 0.3


def redeliver_hook(base: str, custom_id: str) -> dict[str, Any]:
    """A webhook that asks Batchgate at `base` to redeliver `custom_id`, with the API key."""
    return {
        "type": "webhook",
        "webhook_url": f"{base}/api/requests/{custom_id}/redeliver",
        "headers": {"Authorization": f"Bearer {KEY}"},
    }


def keyed(app: RunningApp) -> RunningApp:
    app.client.headers["authorization"] = f"Bearer {KEY}"
    return app


def message(url: str) -> Message:
    return Message("dlv_1", "c1", 1, b'{"custom_id":"c1"}', {"type": "webhook", "webhook_url": url})


async def submit(app: RunningApp, custom_id: str, delivery: dict[str, Any]) -> Any:
    return await app.client.post("/api/requests", json=request_payload(custom_id, delivery))


async def submit_pair(app: RunningApp, base: str) -> None:
    """Requests C and D, each one's webhook the other's redeliver URL at `base`: the issue's loop."""
    for mine, other in (("loop-c", "loop-d"), ("loop-d", "loop-c")):
        answer = await submit(app, mine, redeliver_hook(base, other))
        assert answer.status_code == 202, answer.text


async def start_loop(app: RunningApp, base: str) -> None:
    """The issue's pair, started one after the other (C's first delivery finds no D: a 404), so
    that their first deliveries are not in flight at once, each redelivering the other while it
    is still queued (a no-op) and ending the loop before it starts."""
    answer = await submit(app, "loop-c", redeliver_hook(base, "loop-d"))
    assert answer.status_code == 202, answer.text
    await wait_until(lambda: settled(app, "loop-c"), timeout=20, what="C's first delivery")
    answer = await submit(app, "loop-d", redeliver_hook(base, "loop-c"))
    assert answer.status_code == 202, answer.text


@dataclass
class Loop:
    """How the issue's loop ended: each request's redeliveries, the deliveries that failed (the
    visible end), and the refusal (409 or 429) of a restart by hand, if one was refused."""

    counts: list[int]
    failed: list[dict[str, Any]]
    refused: int | None


async def run_loop(app: RunningApp, base: str) -> Loop:
    """Start the issue's loop through `base` and wait until it is over: nothing queued, and a
    delivery failed or the server refused to go on.

    A loop can stall of itself: a redelivery that reaches a delivery not yet recorded as
    delivered finds it queued still, and is a no-op. The issue's loop ran on (733 attempts); a
    stalled one is started again here by hand, as it would have gone on there."""
    await start_loop(app, base)
    refused: list[int] = []

    async def over() -> bool:
        if not await settled(app, *PAIR):
            return False
        if await failed(app):
            return True
        counts = {c: await redeliveries(app, c) for c in PAIR}
        answer = await app.client.post(f"/api/requests/{min(PAIR, key=counts.__getitem__)}/redeliver")
        if answer.status_code != 202:
            refused.append(answer.status_code)
        return bool(refused)

    await wait_until(over, timeout=60, what="the loop to end")
    counts = [await redeliveries(app, c) for c in PAIR]
    return Loop(counts, await failed(app), refused[0] if refused else None)


async def failed(app: RunningApp) -> list[dict[str, Any]]:
    """The pair's failed deliveries, but for C's first (a 404: D did not exist yet)."""
    rows = [d for c in PAIR for d in await deliveries(app, c)]
    return [
        d for d in rows if d["status"] == "delivery_failed" and d["attempt_log"][-1]["http_status"] != 404
    ]


async def deliveries(app: RunningApp, custom_id: str) -> list[dict[str, Any]]:
    answer = await app.client.get(f"/api/requests/{custom_id}")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["deliveries"]
    return found


async def settled(app: RunningApp, *custom_ids: str) -> bool:
    """Whether every delivery of these requests is in a terminal state (nothing queued)."""
    for custom_id in custom_ids:
        rows = await deliveries(app, custom_id)
        if not rows or any(d["status"] not in TERMINAL for d in rows):
            return False
    return True


async def redeliveries(app: RunningApp, custom_id: str) -> int:
    """How many redeliveries of `custom_id` its audit trail records."""
    async with app.db.transaction() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(RequestEvent)
            .join(Request, Request.id == RequestEvent.request_id)
            .where(Request.custom_id == custom_id, RequestEvent.action == "redeliver")
        )
    return int(count or 0)


def assert_refused_as_own(answer: Any) -> None:
    assert answer.status_code == 422, answer.text
    error = answer.json()["errors"][0]
    assert error["code"] == "invalid_webhook_url", error
    assert "this server" in error["detail"] and "call Batchgate itself" in error["detail"], error
    assert error["source"]["pointer"] == "/delivery_config/webhook_url"


async def test_the_loop_of_the_issue_is_refused_at_intake(database_url: str) -> None:
    settings = fast_settings(
        database_url,
        scheduler_enabled=False,
        api_keys=KEY,
        self_addresses="gateway.example:443, 10.9.8.7:8443",
    )
    async with run_app_at_its_port(settings) as app:
        keyed(app)
        port = app.settings.port
        assert app.url == f"http://127.0.0.1:{port}"
        # The issue's pair, each the other's redeliver URL on this very server: neither is taken.
        for mine, other in (("loop-c", "loop-d"), ("loop-d", "loop-c")):
            assert_refused_as_own(await submit(app, mine, redeliver_hook(app.url, other)))
        # Other spellings of this server: the loopback name and addresses at its port, and the
        # addresses the operator lists (a load balancer's name, a replica's address).
        for n, base in enumerate(
            [
                f"http://localhost:{port}",
                f"http://LOCALHOST.:{port}",
                f"http://[::1]:{port}",
                f"http://[::ffff:127.0.0.1]:{port}",
                "https://gateway.example",
                "http://10.9.8.7:8443",
            ]
        ):
            assert_refused_as_own(await submit(app, f"own-{n}", redeliver_hook(base, "loop-d")))
        # Another port of this machine, or another port of a listed host, is someone else.
        for n, base in enumerate(["http://127.0.0.1:9", "http://gateway.example:8080", "http://10.9.8.7"]):
            answer = await submit(app, f"other-{n}", redeliver_hook(base, "loop-d"))
            assert answer.status_code == 202, (base, answer.text)


async def test_a_name_that_resolves_to_this_server_is_refused_at_send(
    database_url: str, inference: InferenceStandin
) -> None:
    # The machine's own name passes intake (a name is checked when it is resolved) and resolves
    # to one of its addresses: with HOST 0.0.0.0, every local address at PORT is this server.
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, None)
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    settings = fast_settings(database_url, inference.url + "/v1", api_keys=KEY, host="0.0.0.0")
    async with run_app_at_its_port(settings) as app:
        keyed(app)
        await submit_pair(app, f"http://{name}:{app.settings.port}")
        await wait_until(lambda: settled(app, "loop-c", "loop-d"), timeout=20, what="both deliveries to end")
        for custom_id in ("loop-c", "loop-d"):
            [delivery] = await deliveries(app, custom_id)
            assert delivery["status"] == "delivery_failed", delivery
            assert delivery["total_attempts"] == 1  # refused for good: never retried
            assert "own address" in delivery["last_error"] and delivery["last_error"].startswith("refused")
            assert await redeliveries(app, custom_id) == 0  # nothing reached the API


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        # REDELIVER_MAX: the refused call is a 409, a permanent failure at once.
        ({"redeliver_max": 4, "redeliver_per_minute": 1000}, 409, "redeliver_limit"),
        # REDELIVER_PER_MINUTE: a 429, retried until the delivery's attempts run out
        # (DELIVERY_MAX_ATTEMPTS), well inside the minute: delivery_failed, not a slower loop.
        ({"redeliver_per_minute": 2, "delivery_max_attempts": 3}, 429, "redeliver_rate"),
    ],
    ids=["count", "rate"],
)
async def test_a_loop_past_intake_ends_at_a_redelivery_bound(
    overrides: dict[str, int], status: int, code: str, database_url: str, inference: InferenceStandin
) -> None:
    # A proxy the operator did not list in SELF_ADDRESSES: the loop gets past both checks, and
    # ends when a request has been redelivered as often as a bound allows.
    settings = fast_settings(database_url, inference.url + "/v1", api_keys=KEY, **overrides)
    bound = min(settings.redeliver_max, settings.redeliver_per_minute)
    async with run_app_at_its_port(settings) as app:
        keyed(app)
        async with TcpProxy("127.0.0.1", app.settings.port, delay=SLOW_LINK) as proxy:
            loop = await run_loop(app, f"http://127.0.0.1:{proxy.port}")
    assert max(loop.counts) == bound, loop
    assert loop.failed or loop.refused == status, loop  # over: it failed, or cannot go on
    refusals = 1 if status == 409 else settings.delivery_max_attempts
    for delivery in loop.failed:
        # Its last attempts (all of them since it was last queued) were refused.
        log = delivery["attempt_log"]
        assert [a["http_status"] for a in log][-refusals:] == [status] * refusals, loop
        assert code in log[-1]["response_excerpt"], loop


async def test_redeliver_past_its_bounds_answers_429_then_409(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", redeliver_max=3, redeliver_per_minute=2)
    async with run_app_at_its_port(settings) as app:
        answer = await submit(app, "bounded", {"type": "webhook", "webhook_url": receiver.url + "/hook"})
        assert answer.status_code == 202, answer.text
        await wait_until(lambda: settled(app, "bounded"), timeout=20, what="the first delivery")

        async def redeliver() -> Any:
            return await app.client.post("/api/requests/bounded/redeliver")

        assert [(await redeliver()).status_code for _ in range(2)] == [202, 202]
        too_soon = await redeliver()
        assert too_soon.status_code == 429, too_soon.text
        assert too_soon.json()["errors"][0]["code"] == "redeliver_rate"
        assert 1 <= int(too_soon.headers["retry-after"]) <= 60
        # A minute later (its audit trail moved back), one more is allowed, then no more at all.
        async with app.db.transaction() as session:
            for event in (await session.scalars(select(RequestEvent))).all():
                event.at -= timedelta(minutes=2)
        assert (await redeliver()).status_code == 202
        await wait_until(lambda: settled(app, "bounded"), timeout=20, what="the third redelivery")
        over = await redeliver()
        assert over.status_code == 409, over.text
        error = over.json()["errors"][0]
        assert error["code"] == "redeliver_limit" and "REDELIVER_MAX" in error["detail"]
        # The refusal changed nothing: the delivery stays delivered, three redeliveries audited.
        [delivery] = await deliveries(app, "bounded")
        assert delivery["status"] == "delivered"
        assert await redeliveries(app, "bounded") == 3


async def test_a_name_resolving_to_a_listed_address_is_refused_at_send(receiver: WebhookReceiver) -> None:
    # The receiver stands for a replica at an address SELF_ADDRESSES lists; an alias of it that
    # intake cannot know is refused once resolved, and nothing is sent. Another port is not it.
    port = int(receiver.url.rsplit(":", 1)[1])

    async def resolve(host: str) -> list[str]:
        return ["127.0.0.1"]

    settings = fast_settings("sqlite+aiosqlite://", self_addresses=f"127.0.0.1:{port}")
    channel = WebhookChannel(settings, resolve=resolve)
    try:
        refused = await channel.send(message(f"http://replica-alias.test:{port}/api/requests/d/redeliver"))
        other = await channel.send(message(f"http://replica-alias.test:{port + 1}/hook"))
    finally:
        await channel.close()
    assert refused.outcome == "permanent_failure", refused
    assert refused.error == (
        f"refused: replica-alias.test resolves to 127.0.0.1 port {port} "
        "is an address of this server (SELF_ADDRESSES)"
    )
    assert receiver.received == []
    assert "this server" not in (other.error or ""), other


def test_a_malformed_self_address_stops_the_process_at_start() -> None:
    for value in ("gateway:http", "user@gateway:443", "gateway:443/path", "[::1"):
        with pytest.raises(ValueError, match="SELF_ADDRESSES"):
            fast_settings("sqlite+aiosqlite://", self_addresses=value)
    assert fast_settings("sqlite+aiosqlite://", self_addresses=" lb.example:443 , [fd00::5]:4000,proxy ")
