"""Finding and making destination rows; a destination is named by its key (deliveries.destination)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Destination
from app.ground.clock import utcnow
from app.ground.statuses import BreakerState


async def ensure(session: AsyncSession, keys: Collection[str]) -> None:
    """Make the rows of the destinations in `keys` that have none yet (replicas may race: the
    key is unique, and the loser's insert does nothing)."""
    keys = sorted({key for key in keys if key})
    if not keys:
        return
    now = utcnow()
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(Destination)
        .values(
            [
                {
                    "key": key,
                    "breaker": BreakerState.CLOSED,
                    "consecutive_failures": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for key in keys
            ]
        )
        .on_conflict_do_nothing(index_elements=["key"])
    )


async def locked(session: AsyncSession, key: str) -> Destination:
    """The destination `key`, made when missing, locked for the rest of the transaction."""
    await ensure(session, [key])
    row = (
        await session.execute(select(Destination).where(Destination.key == key).with_for_update())
    ).scalar_one()
    return row
