"""Reading recoveries back: the list (newest first) and one with its timeline and, for a replay,
how its deliveries are doing."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from app.core.rules.errors import found
from app.db.models import Delivery, Recovery, RecoveryEvent
from app.db.session import Database


@dataclass(frozen=True)
class RecoveryDetail:
    recovery: Recovery
    events: list[RecoveryEvent]
    # A replay's deliveries by status (pending, retrying, delivered, delivery_failed); {} for a recover.
    deliveries: dict[str, int] = field(default_factory=dict)


async def list_recoveries(db: Database, before_id: int | None = None, limit: int = 50) -> list[Recovery]:
    async with db.transaction() as session:
        query = select(Recovery).order_by(Recovery.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(Recovery.id < before_id)
        return list((await session.scalars(query)).all())


async def recovery_detail(db: Database, recovery_id: int) -> RecoveryDetail:
    async with db.transaction() as session:
        recovery = found(await session.get(Recovery, recovery_id), "recovery", recovery_id)
        events = list(
            (
                await session.scalars(
                    select(RecoveryEvent)
                    .where(RecoveryEvent.recovery_id == recovery_id)
                    .order_by(RecoveryEvent.id)
                )
            ).all()
        )
        counts = await session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.replay_id == recovery_id)
            .group_by(Delivery.status)
        )
        return RecoveryDetail(recovery, events, {status: int(n) for status, n in counts})
