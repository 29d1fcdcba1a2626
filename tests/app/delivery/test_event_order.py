"""A batch's events reach each receiver in order, and a receiver that has not taken an earlier
event holds back only its own later ones (app.core.delivery.in_turn), on both databases."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import insert

from app.core import delivery
from app.db.models import Batch, BatchEvent, Delivery
from app.db.session import Database
from app.ground.clock import utcnow
from testkit import fast_settings

CHANNELS = {"webhook": SimpleNamespace(available=True, timeout_seconds=5.0)}


def event_delivery(event_id: int, receiver: str, due_in: float) -> dict[str, object]:
    now = utcnow()
    target = {"type": "webhook", "url": f"http://{receiver}.example/events", "event": {"type": "e"}}
    return {
        "batch_event_id": event_id,
        "channel": "webhook",
        "target": target,
        "destination": f"webhook:http://{receiver}.example",
        "status": "pending",
        "attempts": 0,
        "total_attempts": 0,
        "next_attempt_at": now + timedelta(seconds=due_in),
        "created_at": now,
    }


async def test_a_receiver_behind_on_an_earlier_event_holds_back_only_its_own(
    db: Database, database_url: str
) -> None:
    now = utcnow()
    async with db.engine.begin() as conn:
        batch_id = (
            await conn.execute(
                insert(Batch).returning(Batch.id),
                [{"backend": "local", "endpoint": "/v1/chat/completions", "model": "m", "status": "done",
                  "created_at": now, "status_changed_at": now}],
            )
        ).scalar_one()  # fmt: skip
        first, second = (
            await conn.execute(
                insert(BatchEvent).returning(BatchEvent.id, sort_by_parameter_order=True),
                [{"batch_id": batch_id, "from_status": None, "to_status": s, "at": now} for s in ("a", "b")],
            )
        ).scalars()
        ids = (
            await conn.execute(
                insert(Delivery).returning(Delivery.id, sort_by_parameter_order=True),
                [
                    event_delivery(first, "down", due_in=3600),  # waiting for its retry
                    event_delivery(second, "down", due_in=-1),  # due, but behind the first
                    event_delivery(second, "up", due_in=-1),  # due, and nothing ahead of it
                ],
            )
        ).scalars().all()  # fmt: skip
    claimed = await delivery.claim_due(db, "test", fast_settings(database_url), CHANNELS, 10)  # type: ignore[arg-type]
    assert [row_id for row_id, _ in claimed] == [ids[2]]
