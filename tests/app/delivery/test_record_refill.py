"""A group's record claims the refill of the room it frees in its own transaction (issue 30,
h33-rmqout), on both databases: deliveries keep going with no wake of the delivery step, the
dispatcher never holds more than AHEAD times its slots, and a refill that fails takes the record
with it (the group stays leased and unrecorded, nothing more is sent)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from app.channels.base import Message, SendResult
from app.core import delivery
from app.core.dispatch import AHEAD, Dispatcher
from app.db.models import Delivery, DeliveryAttempt
from app.db.session import Database
from app.ground.statuses import Outcome
from testkit import fast_settings, wait_until
from tests.app.delivery.test_claim_backlog import add, due
from tests.app.delivery.test_round_statements import transactions

DESTINATION = "webhook:http://refill.example"
SLOTS = 4


class Answering:
    """A channel that answers every send at once, noting how many deliveries the dispatcher
    held claimed at each send."""

    available = True
    timeout_seconds = 5.0

    def __init__(self) -> None:
        self.sent = 0
        self.claimed: list[int] = []
        self.dispatcher: Dispatcher | None = None

    async def send(self, message: Message) -> SendResult:
        self.sent += 1
        if self.dispatcher is not None:
            self.claimed.append(len(self.dispatcher._claimed))
        return SendResult(Outcome.SUCCESS, http_status=200)


def dispatcher_for(db: Database, database_url: str, channel: Answering) -> Dispatcher:
    settings = fast_settings(database_url, delivery_concurrency=SLOTS, delivery_destination_concurrency=SLOTS)
    # No wake and no retry timer: whatever is sent after the first claim, a record refilled.
    dispatcher = Dispatcher(db, "test", lambda: settings, {"webhook": channel}, lambda: None, lambda _: None)
    channel.dispatcher = dispatcher
    return dispatcher


async def count(db: Database, query: Any) -> int:
    async with db.engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def test_records_refill_with_no_wake_and_hold_at_most_ahead_times_the_slots(
    db: Database, database_url: str
) -> None:
    n = 60
    await add(db, [due(DESTINATION) for _ in range(n)])
    channel = Answering()
    dispatcher = dispatcher_for(db, database_url, channel)
    delivered = select(func.count()).where(Delivery.status == "delivered")
    try:
        with transactions(db) as seen:
            await dispatcher.deliver_due()

            async def all_delivered() -> bool:
                return await count(db, delivered) == n

            await wait_until(all_delivered, timeout=20, what="every delivery recorded, refilled by records")
    finally:
        await dispatcher.stop()
    assert channel.sent == n
    assert await count(db, select(func.count()).select_from(DeliveryAttempt)) == n
    assert max(channel.claimed) <= AHEAD * SLOTS
    # The record's SELECT of its group (its other statements go through the driver itself).
    records = [t for t in seen if any("FROM deliveries LEFT OUTER JOIN destinations" in sql for sql in t)]
    assert records, "attempts were recorded"
    claims = [t for t in seen if any("claimed_id" in sql for sql in t)]
    assert [t for t in claims if t not in records] == [claims[0]], "only the step's claim is on its own"


async def test_a_refill_that_fails_takes_its_record_with_it(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 3 * AHEAD * SLOTS
    await add(db, [due(DESTINATION) for _ in range(n)])
    channel = Answering()
    dispatcher = dispatcher_for(db, database_url, channel)
    claim_in, failed = delivery.claim_in, []

    async def refill_fails(*args: Any, **kwargs: Any) -> delivery.Claimed:
        if not args[-1].probes:  # the record's refill (no probes); the step's claim goes on
            failed.append(1)
            raise RuntimeError("refill failed")
        return await claim_in(*args, **kwargs)

    monkeypatch.setattr(delivery, "claim_in", refill_fails)
    try:
        await dispatcher.deliver_due()
        first = AHEAD * SLOTS

        async def all_given_up() -> bool:
            return channel.sent == first and not dispatcher._claimed and bool(failed)

        await wait_until(all_given_up, timeout=20, what="the first claim sent and its records given up")
    finally:
        await dispatcher.stop()
    assert await count(db, select(func.count()).select_from(DeliveryAttempt)) == 0
    assert await count(db, select(func.count()).where(Delivery.status == "delivered")) == 0
    # Still leased to us (sent again after the lease: at least once), and no refill leased more.
    assert await count(db, select(func.count()).where(Delivery.leased_by == "test")) == first
    assert channel.sent == first
