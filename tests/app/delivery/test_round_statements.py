"""What one delivery round costs the database (issue 30, h33-rmqout), on both databases: the
round's first claim takes the due probes in its own transaction (not one of their own), and a
record of answers from a destination that has no breaker to move locks no destination row."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, insert, select

from app.channels.base import Message, SendResult
from app.core import attempts, delivery
from app.core.dispatch import Dispatcher
from app.db.models import Delivery, DeliveryAttempt, Destination
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.statuses import Outcome
from testkit import fast_settings, wait_until
from tests.app.delivery.test_claim_backlog import CHANNELS, add, due, statements

PROBED, OTHER = "webhook:http://probed.example", "webhook:http://other.example"


class Holding:
    """A channel whose sends never end (until cancelled): what it was given stays in flight."""

    available = True
    timeout_seconds = 5.0

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, message: Message) -> SendResult:
        self.sent.append(message.destination)
        await asyncio.Event().wait()
        raise AssertionError("never set")


@contextmanager
def transactions(db: Database) -> Iterator[list[list[str]]]:
    """The statements run meanwhile, one list per transaction (of any connection: on
    PostgreSQL several run at once)."""
    seen: list[list[str]] = []
    current: dict[int, list[str]] = {}

    def begin(conn: Any) -> None:
        current[id(conn.connection)] = []
        seen.append(current[id(conn.connection)])

    def statement(conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if (open_ := current.get(id(conn.connection))) is not None:
            open_.append(sql)

    engine = db.engine.sync_engine
    event.listen(engine, "begin", begin)
    event.listen(engine, "before_cursor_execute", statement)
    try:
        yield seen
    finally:
        event.remove(engine, "begin", begin)
        event.remove(engine, "before_cursor_execute", statement)


async def destination_row(db: Database, key: str, **columns: Any) -> None:
    now = utcnow()
    async with db.engine.begin() as conn:
        await conn.execute(insert(Destination).values(key=key, created_at=now, updated_at=now, **columns))


async def test_the_probes_are_claimed_with_the_rounds_first_claim(db: Database, database_url: str) -> None:
    now = utcnow()
    await destination_row(
        db,
        PROBED,
        breaker="open",
        consecutive_failures=5,
        opened_at=now - timedelta(seconds=10),
        probe_at=now - timedelta(seconds=1),
    )
    await add(db, [due(PROBED), due(PROBED), due(OTHER), due(OTHER)])
    channel = Holding()
    settings = fast_settings(database_url)
    dispatcher = Dispatcher(db, "test", lambda: settings, {"webhook": channel}, lambda: None, lambda _: None)
    try:
        with transactions(db) as seen:
            await dispatcher.deliver_due()
        await wait_until(lambda: len(channel.sent) == 3, timeout=5, what="the probe and both others sent")
    finally:
        await dispatcher.stop()
    claims = [t for t in seen if any("claimed_id" in sql for sql in t)]
    assert len(claims) == 1, "the probe and the due deliveries are claimed in one transaction"
    assert sum("claimed_id" in sql for sql in claims[0]) == 2
    assert channel.sent[0] == PROBED  # the probe goes first; its destination's others wait
    assert sorted(channel.sent) == [OTHER, OTHER, PROBED]


async def record_answers(db: Database, database_url: str, destination: str, n: int = 3) -> list[str]:
    """Claim and record `n` answered attempts to `destination`; the SQL the record ran."""
    await add(db, [due(destination) for _ in range(n)])
    settings = fast_settings(database_url)
    claimed = await delivery.claim_due(db, "test", settings, CHANNELS, n)  # type: ignore[arg-type]
    answered = SendResult(Outcome.SUCCESS, http_status=200)
    sent = [attempts.Sent(message, row_id, answered, utcnow(), 3) for row_id, message in claimed]
    with statements(db.engine) as seen:
        await attempts.record(db, "test", settings, sent)
    async with db.engine.connect() as conn:
        assert (await conn.execute(select(DeliveryAttempt.outcome))).scalars().all() == ["success"] * n
        assert set((await conn.execute(select(Delivery.status))).scalars()) == {"delivered"}
    return [sql for sql, _ in seen]


def destination_reads(sql: list[str]) -> list[str]:
    """Statements reading the destinations table on its own (the breaker's row lock)."""
    return [s for s in sql if "FROM destinations" in s and "FROM deliveries" not in s]


async def test_answers_from_a_destination_without_a_row_lock_none(db: Database, database_url: str) -> None:
    sql = await record_answers(db, database_url, OTHER)
    assert destination_reads(sql) == []


async def test_answers_from_a_healthy_destination_lock_no_row(db: Database, database_url: str) -> None:
    await destination_row(db, OTHER)
    sql = await record_answers(db, database_url, OTHER)
    assert destination_reads(sql) == []


async def test_answers_after_failures_still_count_them_back_to_zero(db: Database, database_url: str) -> None:
    await destination_row(db, OTHER, consecutive_failures=2)
    sql = await record_answers(db, database_url, OTHER)
    assert destination_reads(sql) != []  # the breaker's own path, with its lock
    async with db.engine.connect() as conn:
        failures = await conn.scalar(select(Destination.consecutive_failures).where(Destination.key == OTHER))
    assert failures == 0
