"""Recovery in bulk (issue 28 part 4), on both databases, received at real webhook receivers and
checked with the `standardwebhooks` library: recover a destination's failed deliveries after it
was down (only that destination's, only since the time asked), replay a batch's results to a new
receiver (each once, with fresh delivery ids), cancel, idempotence, and bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from app.core.recoveries import step as recovery_step
from app.db.models import Delivery, Recovery, Request
from app.ground import sealing
from app.ground.statuses import DeliveryStatus
from app.net.destinations import destination_of
from testkit import RunningApp, StartApp, fast_settings, wait_until, webhook
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.serve import serve

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRETS_KEY = "JEDXcw0hIjwoTDE6Q8_4jSqPYIZdzUHy9a_1V3MnK4A="  # a Fernet key
DESTINATION_CONCURRENCY = 2
SLOW = 0.3  # seconds the receiver takes over each recovered delivery


@pytest.fixture
async def other_receiver() -> AsyncIterator[WebhookReceiver]:
    """A second receiver on an origin of its own: another destination."""
    other = WebhookReceiver()
    async with serve(other) as other.url:  # type: ignore[attr-defined]
        yield other


@pytest.fixture
async def app(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> AsyncIterator[RunningApp]:
    # Two attempts, fast: a receiver that is down leaves its deliveries delivery_failed in moments.
    # Two sends at a time per destination: a recovery must keep to it.
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        delivery_max_attempts=2,
        webhook_secret=SECRET,
        secrets_key=SECRETS_KEY,  # stored webhook header values sealed at rest, a replay's too
        delivery_destination_concurrency=DESTINATION_CONCURRENCY,
        # No circuit breaker: it would hold a down receiver's deliveries instead of letting them
        # end delivery_failed, which is what a recover is for (a breaker's hold is tested apart).
        delivery_breaker_failures=0,
    )
    async with start_app(settings) as running:
        yield running


@pytest.fixture
async def idle(database_url: str, start_app: StartApp) -> AsyncIterator[RunningApp]:
    """The app with no scheduler: the test runs the recover step itself, a chunk at a time."""
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as running:
        yield running


async def deliveries(app: RunningApp) -> dict[str, list[Any]]:
    """Each request's deliveries (its own first, then replays'), by custom id."""
    async with app.db.transaction() as session:
        rows = await session.execute(
            select(Request.custom_id, Delivery)
            .join(Delivery, Delivery.request_id == Request.id)
            .order_by(Delivery.id)
        )
        found: dict[str, list[Any]] = {}
        for custom_id, delivery in rows:
            found.setdefault(custom_id, []).append(delivery)
        return found


async def wait_statuses(app: RunningApp, expected: dict[str, str]) -> None:
    async def settled() -> bool:
        own = {cid: rows[0].status for cid, rows in (await deliveries(app)).items()}
        return all(own.get(cid) == status for cid, status in expected.items())

    await wait_until(settled, timeout=30, what=lambda: f"deliveries to reach {expected}")


async def wait_recovery(app: RunningApp, recovery_id: int, status: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def there() -> bool:
        answer = await app.client.get(f"/api/recoveries/{recovery_id}")
        seen.append(answer.json())
        return answer.status_code == 200 and seen[-1]["status"] == status

    await wait_until(there, timeout=30, what=lambda: f"recovery {recovery_id} to be {status}: {seen[-1:]}")
    return seen[-1]


def verified(received: Any) -> dict[str, Any]:
    """The body, once the standardwebhooks library accepts its signature."""
    body: dict[str, Any] = Webhook(SECRET).verify(received.body, received.headers)
    return body


async def submit(app: RunningApp, url: str, *custom_ids: str) -> None:
    for custom_id in custom_ids:
        answer = await app.submit(custom_id, url)
        assert answer.status_code == 202, answer.text


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def test_recover_queues_a_destinations_failed_deliveries_since_a_time(
    app: RunningApp, receiver: WebhookReceiver, other_receiver: WebhookReceiver
) -> None:
    receiver.down_status = other_receiver.down_status = 503
    recent, old, elsewhere = ["rc/1", "rc/2", "rc/3", "rc/4"], ["old/1", "old/2"], ["else/1", "else/2"]
    await submit(app, receiver.url + "/hook", *recent, *old)  # type: ignore[attr-defined]
    await submit(app, other_receiver.url + "/hook", *elsewhere)  # type: ignore[attr-defined]
    await wait_statuses(app, dict.fromkeys(recent + old + elsewhere, DeliveryStatus.DELIVERY_FAILED))
    # Two of the down receiver's deliveries were made an hour ago: before the time asked for.
    async with app.db.transaction() as session:
        old_ids = select(Request.id).where(Request.custom_id.in_(old))
        await session.execute(
            update(Delivery)
            .where(Delivery.request_id.in_(old_ids))
            .values(created_at=datetime.now(UTC) - timedelta(hours=1))
        )
    before = await deliveries(app)
    receiver.down_status = None  # back up, slow; the other stays down
    receiver.delay_for = dict.fromkeys(recent, SLOW)
    other_seen = len(other_receiver.received)

    key = destination_of(webhook(receiver.url + "/hook"))  # type: ignore[attr-defined]
    since = iso(datetime.now(UTC) - timedelta(minutes=10))
    # Named by any URL of it, as an operator has it at hand: the same as its key.
    ask = {"kind": "recover", "destination": receiver.url + "/other?x=1", "since": since}  # type: ignore[attr-defined]
    answer = await app.client.post("/api/recoveries", json=ask)
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert started["kind"] == "recover" and started["destination"] == key and started["total"] == 4

    final = await wait_recovery(app, started["id"], "done")
    assert final["done"] == final["total"] == 4
    assert [e["to_status"] for e in final["events"]] == ["queued", "running", "done"]
    await receiver.wait_for(lambda r: {x.custom_id for x in r.successes()} == set(recent), timeout=30)
    await wait_statuses(app, dict.fromkeys(recent, DeliveryStatus.DELIVERED))

    # Bounded by the destination's limit: the third send could start only once one of the first
    # two was answered, SLOW after it arrived (the receiver's own clock, arrival order).
    arrivals = sorted(r.at for r in receiver.successes())
    assert arrivals[DESTINATION_CONCURRENCY] - arrivals[0] >= SLOW, arrivals
    after = await deliveries(app)
    for custom_id in recent:
        [arrived] = receiver.successes(custom_id)  # once each
        assert verified(arrived)["custom_id"] == custom_id
        # The same delivery queued again: same webhook-id (receivers deduplicate on it), its
        # trail kept (two failed attempts, then the one that arrived).
        [own] = after[custom_id]
        assert arrived.headers["webhook-id"] == own.public_id == before[custom_id][0].public_id
        assert own.total_attempts == 3 and own.attempts == 1
    for custom_id in old + elsewhere:  # before `since`, or another destination: untouched
        assert [d.status for d in after[custom_id]] == [DeliveryStatus.DELIVERY_FAILED]
        assert after[custom_id][0].total_attempts == 2
    assert not receiver.successes("old/1") and len(other_receiver.received) == other_seen

    # Asked again once done: nothing is failed in its scope any more, so nothing is sent twice.
    again = await app.client.post("/api/recoveries", json={**ask, "destination": key})
    assert again.status_code == 202 and again.json()["id"] != started["id"], again.text
    assert again.json()["status"] == "done" and again.json()["total"] == 0
    listed = (await app.client.get("/api/recoveries")).json()["data"]
    assert [r["id"] for r in listed] == [again.json()["id"], started["id"]]
    assert all(len(receiver.successes(cid)) == 1 for cid in recent)


async def test_replay_sends_a_batchs_results_to_a_new_receiver_once_with_fresh_ids(
    app: RunningApp, receiver: WebhookReceiver, other_receiver: WebhookReceiver
) -> None:
    ids = ["rp/1", "rp/2", "rp/3"]
    await submit(app, receiver.url + "/hook", *ids)  # type: ignore[attr-defined]
    await wait_statuses(app, dict.fromkeys(ids, DeliveryStatus.DELIVERED))
    async with app.db.transaction() as session:
        batch_id = await session.scalar(select(Request.batch_id).where(Request.custom_id == "rp/1"))
        in_batch = set(
            (await session.scalars(select(Request.custom_id).where(Request.batch_id == batch_id))).all()
        )
    first = {cid: receiver.successes(cid)[0] for cid in in_batch}

    target = {**webhook(other_receiver.url + "/replayed"), "headers": {"x-replay": "yes"}}  # type: ignore[attr-defined]
    answer = await app.client.post(
        "/api/recoveries", json={"kind": "replay", "batch_id": batch_id, "delivery_config": target}
    )
    assert answer.status_code == 202, answer.text
    replay = answer.json()
    assert replay["total"] == len(in_batch) and replay["delivery_config"]["headers"]["x-replay"] != "yes"
    async with app.db.transaction() as session:  # the header's value is not kept in the clear
        stored = await session.get(Recovery, replay["id"])
        assert stored is not None and stored.target is not None
        assert sealing.is_sealed(stored.target["headers"]["x-replay"])
    await other_receiver.wait_for(lambda r: len(r.successes()) == len(in_batch), timeout=30)
    final = await wait_recovery(app, replay["id"], "done")
    assert final["done"] == len(in_batch)

    async def all_delivered() -> bool:
        detail = (await app.client.get(f"/api/recoveries/{replay['id']}")).json()
        return bool(detail["deliveries"] == {"delivered": len(in_batch)})

    await wait_until(all_delivered, timeout=30, what="the replay's deliveries to end delivered")
    for custom_id in in_batch:
        [again] = other_receiver.successes(custom_id)  # once each
        assert again.path == "/replayed" and again.headers["x-replay"] == "yes"
        assert verified(again) == verified(first[custom_id])  # the same result line
        assert again.headers["webhook-id"] != first[custom_id].headers["webhook-id"]  # a new delivery
        # The request still shows its own delivery, to its own target.
        own = (await app.client.get(f"/api/requests/{custom_id}")).json()["delivery"]
        assert own["id"] == first[custom_id].headers["webhook-id"] and "/hook" in own["target"]["webhook_url"]
    assert len(receiver.successes()) == len(ids)  # the first receiver got nothing more


async def test_a_recovery_is_idempotent_while_it_runs_and_a_cancel_stops_it(
    idle: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "https://hooks.example.com:443"
    now = datetime.now(UTC)
    failed = {
        "request_id": None,
        "channel": "webhook",
        "target": webhook("https://hooks.example.com/h"),
        "destination": key,
        "status": DeliveryStatus.DELIVERY_FAILED,
        "attempts": 2,
        "total_attempts": 2,
        "created_at": now,
    }
    async with idle.db.transaction() as session:
        session.add_all([Delivery(**failed) for _ in range(5)])
        session.add(Delivery(**{**failed, "status": DeliveryStatus.PENDING, "attempts": 0}))
    ask = {"kind": "recover", "destination": key, "since": iso(now - timedelta(minutes=1))}
    first = await idle.client.post("/api/recoveries", json=ask)
    assert first.status_code == 202 and first.json()["status"] == "queued" and first.json()["total"] == 5
    recovery_id = first.json()["id"]
    again = await idle.client.post("/api/recoveries", json=ask)  # the same, while it is queued
    assert again.status_code == 200 and again.json()["id"] == recovery_id, again.text

    monkeypatch.setattr(recovery_step, "CHUNK", 2)
    chunk = await recovery_step.step(idle.db, "test-worker", 5)
    assert chunk.queued == 2 and chunk.more
    running = (await idle.client.get(f"/api/recoveries/{recovery_id}")).json()
    assert running["status"] == "running" and running["done"] == 2
    assert (await idle.client.post("/api/recoveries", json=ask)).json()["id"] == recovery_id

    cancelled = await idle.client.post(f"/api/recoveries/{recovery_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled", cancelled.text
    assert (await idle.client.post(f"/api/recoveries/{recovery_id}/cancel")).status_code == 409
    assert await recovery_step.step(idle.db, "test-worker", 5) == recovery_step.Chunk(0, False)
    async with idle.db.transaction() as session:
        statuses = sorted((await session.scalars(select(Delivery.status))).all())
    # Two queued by the chunk before the cancel, three left failed, the pending one untouched.
    assert statuses == ["delivery_failed"] * 3 + ["pending"] * 3
    detail = (await idle.client.get(f"/api/recoveries/{recovery_id}")).json()
    assert detail["done"] == 2 and detail["finished_at"]
    assert [e["to_status"] for e in detail["events"]] == ["queued", "running", "cancelled"]
    # Ended, it no longer answers for the same ask: a new one takes the three left.
    fresh = await idle.client.post("/api/recoveries", json=ask)
    assert fresh.status_code == 202 and fresh.json()["id"] != recovery_id and fresh.json()["total"] == 3


async def test_bad_input_is_refused_with_a_code(database_url: str, start_app: StartApp) -> None:
    settings = fast_settings(database_url, scheduler_enabled=False, webhook_allow_private=False)
    async with start_app(settings) as app:
        since = "2026-01-01T00:00:00Z"
        hook = webhook("https://hooks.example.com/h")
        cases: list[tuple[Any, int, str]] = [
            ([1], 422, "invalid_body"),
            ({"destination": "x", "since": since}, 422, "invalid_kind"),
            ({"kind": {}, "destination": "x", "since": since}, 422, "invalid_kind"),
            (
                {"kind": "recover", "destination": "https://a:443", "since": "9999-12-31T23:59:59-05:00"},
                422,
                "invalid_time",
            ),
            ({"kind": "recover", "destination": "https://a:443"}, 422, "invalid_time"),
            ({"kind": "recover", "destination": "https://a:443", "since": "yesterday"}, 422, "invalid_time"),
            ({"kind": "recover", "destination": "", "since": since}, 422, "invalid_destination"),
            ({"kind": "recover", "destination": "http://[", "since": since}, 422, "invalid_destination"),
            (
                {"kind": "recover", "destination": "https://a:443", "since": since, "until": since},
                422,
                "invalid_range",
            ),
            (
                {"kind": "recover", "destination": "https://a:443", "since": since, "batch_id": 1},
                422,
                "unknown_field",
            ),
            ({"kind": "replay", "batch_id": 1}, 422, "missing_delivery_config"),
            ({"kind": "replay", "batch_id": "one", "delivery_config": hook}, 422, "invalid_batch_id"),
            (
                {"kind": "replay", "batch_id": 1, "since": since, "delivery_config": hook},
                422,
                "invalid_scope",
            ),
            ({"kind": "replay", "delivery_config": hook}, 422, "invalid_time"),
            ({"kind": "replay", "since": since, "delivery_config": {"type": "none"}}, 422, "no_target"),
            (
                {"kind": "replay", "since": since, "delivery_config": webhook("http://127.0.0.1:9/h")},
                422,
                "invalid_webhook_url",
            ),
            (
                {
                    "kind": "replay",
                    "since": since,
                    "delivery_config": [hook, webhook("https://b.example.com/h")],
                },
                422,
                "one_target",
            ),
            ({"kind": "replay", "batch_id": 999, "delivery_config": hook}, 404, "not_found"),
        ]
        for body, status, code in cases:
            answer = await app.client.post("/api/recoveries", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert answer.json()["errors"][0]["code"] == code, (body, answer.text)
        not_json = await app.client.post(
            "/api/recoveries", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400 and not_json.json()["errors"][0]["code"] == "invalid_json"
        assert (await app.client.get("/api/recoveries/77")).status_code == 404
        assert (await app.client.post("/api/recoveries/77/cancel")).status_code == 404
        # A destination nothing failed to is no error: there is nothing to do, and it says so.
        nothing = await app.client.post(
            "/api/recoveries", json={"kind": "recover", "destination": "https://nobody:443", "since": since}
        )
        assert nothing.status_code == 202 and nothing.json()["status"] == "done"
        assert nothing.json()["total"] == nothing.json()["done"] == 0


async def test_replay_of_a_time_range_sends_only_what_completed_in_it_and_never_twice(
    app: RunningApp, receiver: WebhookReceiver, other_receiver: WebhookReceiver
) -> None:
    ids = ["tr/in", "tr/out"]
    await submit(app, receiver.url + "/hook", *ids)  # type: ignore[attr-defined]
    await wait_statuses(app, dict.fromkeys(ids, DeliveryStatus.DELIVERED))
    async with app.db.transaction() as session:  # one of them completed two hours ago
        await session.execute(
            update(Request)
            .where(Request.custom_id == "tr/out")
            .values(completed_at=datetime.now(UTC) - timedelta(hours=2))
        )
    ask = {
        "kind": "replay",
        "since": iso(datetime.now(UTC) - timedelta(hours=1)),
        "delivery_config": webhook(other_receiver.url + "/range"),  # type: ignore[attr-defined]
    }
    answer = await app.client.post("/api/recoveries", json=ask)
    assert answer.status_code == 202 and answer.json()["total"] == 1, answer.text
    final = await wait_recovery(app, answer.json()["id"], "done")
    await other_receiver.wait_for(lambda r: len(r.successes()) == 1, timeout=30)
    assert verified(other_receiver.successes()[0])["custom_id"] == "tr/in" and final["done"] == 1

    # A chunk done again (as after a crash between its inserts and moving its cursor) makes
    # nothing new: each request has at most one delivery per replay.
    async with app.db.transaction() as session:
        recovery = await session.get(Recovery, final["id"])
        done_ids = list((await session.scalars(select(Request.id).where(Request.custom_id == "tr/in"))).all())
        assert recovery is not None and await recovery_step.replay_chunk(session, recovery, done_ids) == 0
    replayed = [d for rows in (await deliveries(app)).values() for d in rows if d.replay_id == final["id"]]
    assert len(replayed) == 1 and len(other_receiver.successes()) == 1
