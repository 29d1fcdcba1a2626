"""A group's record claims the dispatcher's refill in its own transaction (one commit a group, not
two), all or nothing; and a group of answered attempts to a healthy destination leaves the
breaker's rows alone (app.core.attempts, app.core.dispatch), on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.channels.base import Message, SendResult
from app.core import attempts, delivery
from app.core.dispatch import Dispatcher
from app.db.models import Delivery, DeliveryAttempt, Destination
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.statuses import BreakerState, Outcome
from testkit import fast_settings, wait_until

DESTINATION = "webhook:http://receiver.example"


class Answering:
    """A channel whose every send is answered at once."""

    name = "webhook"
    available = True
    timeout_seconds = 5.0

    async def send(self, message: Message) -> SendResult:
        await asyncio.sleep(0)  # the send ends on a later turn of the loop, as a real one does
        return SendResult(Outcome.SUCCESS, http_status=200)


def due() -> dict[str, Any]:
    now = utcnow()
    return {
        "channel": "webhook",
        "target": {"type": "webhook", "url": "http://receiver.example/hook", "event": {"n": 1}},
        "destination": DESTINATION,
        "status": "pending",
        "attempts": 0,
        "total_attempts": 0,
        "next_attempt_at": now - timedelta(seconds=1),
        "created_at": now,
    }


async def add(db: Database, n: int) -> list[int]:
    async with db.engine.begin() as conn:
        returning = insert(Delivery).returning(Delivery.id, sort_by_parameter_order=True)
        return list((await conn.execute(returning, [due() for _ in range(n)])).scalars())


@contextmanager
def transactions(engine: AsyncEngine) -> Iterator[list[list[str]]]:
    """The statements of each transaction the engine commits meanwhile (SQLAlchemy's own; the
    driver's executemany UPDATE of the outcomes is not among them)."""
    committed: list[list[str]] = []
    running: dict[int, list[str]] = {}

    def note(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        running.setdefault(id(conn), []).append(statement)

    def commit(conn: Any) -> None:
        committed.append(running.pop(id(conn), []))

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    event.listen(engine.sync_engine, "commit", commit)
    try:
        yield committed
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)
        event.remove(engine.sync_engine, "commit", commit)


def claims(statements: list[str]) -> bool:
    return any("claimed_id" in sql for sql in statements)


def records(statements: list[str]) -> bool:
    return any(sql.startswith("INSERT INTO delivery_attempts") for sql in statements)


async def count(db: Database, query: Any) -> int:
    async with db.engine.connect() as conn:
        return int(await conn.scalar(query))


async def test_each_groups_record_claims_the_refill_in_its_own_transaction(
    db: Database, database_url: str
) -> None:
    settings = fast_settings(database_url, delivery_concurrency=4, delivery_destination_concurrency=4)
    await add(db, 60)
    wakes = 0

    def wake() -> None:
        nonlocal wakes
        wakes += 1

    channels = {"webhook": Answering()}
    dispatcher = Dispatcher(db, "test", lambda: settings, channels, wake, lambda _: None)  # type: ignore[arg-type]
    delivered = select(func.count()).where(Delivery.status == "delivered")
    try:
        with transactions(db.engine) as committed:
            await dispatcher.deliver_due()  # the step's one round: it claims the first 8

            async def all_delivered() -> bool:
                return await count(db, delivered) == 60

            await wait_until(all_delivered, 60, what="60 delivered")
    finally:
        await dispatcher.stop()
    recorded = [statements for statements in committed if records(statements)]
    claimed_alone = [statements for statements in committed if claims(statements) and not records(statements)]
    # Without the refill in the record, each record woke the step and its claim committed apart.
    assert len(claimed_alone) == 1, [s[:2] for s in claimed_alone]
    assert all(claims(statements) for statements in recorded)
    assert wakes == 0
    # The audit trail: one attempt row per delivery, each attempt its delivery's first.
    assert await count(db, select(func.count()).select_from(DeliveryAttempt)) == 60
    assert await count(db, select(func.max(DeliveryAttempt.number))) == 1


async def test_a_refill_that_fails_takes_the_record_with_it(db: Database, database_url: str) -> None:
    settings = fast_settings(database_url)
    ids = await add(db, 3)
    channels: Any = {"webhook": SimpleNamespace(available=True, timeout_seconds=5.0)}
    claimed = await delivery.claim_due(db, "test", settings, channels, 2)
    sent = [
        attempts.Sent(message, row_id, SendResult(Outcome.SUCCESS), utcnow(), 1)
        for row_id, message in claimed
    ]

    async def refill(session: AsyncSession) -> list[Any]:
        await delivery.claim_due_rows(session, "test", settings, channels, 1)
        raise RuntimeError("the refill broke")

    with pytest.raises(RuntimeError, match="the refill broke"):
        await attempts.record(db, "test", settings, sent, refill)
    # Nothing of either committed: the two sent are still leased to us (sent again after their
    # lease, at least once), unrecorded, and the third is still free.
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(select(Delivery.id, Delivery.status, Delivery.leased_by).order_by(Delivery.id))
        ).all()
    assert [(row.status, row.leased_by) for row in rows] == [("pending", "test")] * 2 + [("pending", None)]
    assert [row.id for row in rows] == ids
    assert await count(db, select(func.count()).select_from(DeliveryAttempt)) == 0

    # And when it works, both commit: the two recorded, the third leased by the refill.
    async def works(session: AsyncSession) -> Any:
        return await delivery.claim_due_rows(session, "test", settings, channels, 1)

    recorded = await attempts.record(db, "test", settings, sent, works)
    assert recorded.refilled is not None and [row.claimed_id for row in recorded.refilled] == ids[2:]
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(Delivery.status, Delivery.leased_by).order_by(Delivery.id))).all()
    assert [tuple(row) for row in rows] == [("delivered", None)] * 2 + [("pending", "test")]


async def record_successes(db: Database, database_url: str, n: int) -> list[list[str]]:
    """Claim and record `n` answered attempts; the transactions of the record."""
    settings = fast_settings(database_url)
    channels: Any = {"webhook": SimpleNamespace(available=True, timeout_seconds=5.0)}
    claimed = await delivery.claim_due(db, "test", settings, channels, n)
    sent = [
        attempts.Sent(message, row_id, SendResult(Outcome.SUCCESS), utcnow(), 1)
        for row_id, message in claimed
    ]
    with transactions(db.engine) as committed:
        await attempts.record(db, "test", settings, sent)
    return committed


async def add_destination(db: Database, failures: int) -> None:
    """The destination's row: closed, counting `failures` in a row."""
    async with db.transaction() as session:
        now = utcnow()
        row = Destination(
            key=DESTINATION,
            breaker=BreakerState.CLOSED,
            consecutive_failures=failures,
            created_at=now,
            updated_at=now,
        )
        session.add(row)


async def test_answers_from_a_healthy_destination_lock_no_destination_row(
    db: Database, database_url: str
) -> None:
    await add(db, 4)
    # No row (never failed): the record's own SELECT says so, and nothing more is read.
    [statements] = await record_successes(db, database_url, 2)
    assert not [sql for sql in statements if sql.startswith("SELECT destinations")], statements
    # A row, closed and counting no failures: the same.
    await add_destination(db, 0)
    [statements] = await record_successes(db, database_url, 2)
    assert not [sql for sql in statements if sql.startswith("SELECT destinations")], statements


async def test_an_answer_still_ends_a_run_of_failures(db: Database, database_url: str) -> None:
    """Failures in a row below the threshold: an answered attempt counts them back to 0."""
    await add(db, 1)
    await add_destination(db, 2)
    await record_successes(db, database_url, 1)
    failures = select(Destination.consecutive_failures).where(Destination.key == DESTINATION)
    assert await count(db, failures) == 0
