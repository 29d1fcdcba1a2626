"""The recover step: works through queued and running recoveries, one chunk per transaction.

A chunk claims the oldest active recovery (leases.claim: replicas never take the same one),
queues again (recover) or creates (replay) the deliveries of the next CHUNK rows of its scope
after its cursor, and moves the cursor and the count on in the same transaction: a chunk that
dies rolls back whole, and one that commits is never done twice. It sends nothing itself: the
dispatcher sends what it queued, within each destination's limits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import results
from app.core.recoveries import scope
from app.core.rules import audit, leases, states
from app.db.models import Delivery, Recovery
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.statuses import DeliveryStatus, RecoveryKind, RecoveryStatus

log = logging.getLogger(__name__)

# Rows per chunk: one transaction each, short enough not to hold the database for long.
CHUNK = 500


@dataclass(frozen=True)
class Chunk:
    queued: int  # deliveries queued (recover) or created (replay): the deliverer has work
    more: bool  # an active recovery is left: run again at once


async def step(db: Database, owner: str, lease_seconds: float) -> Chunk:
    """Do one chunk of the oldest active recovery."""
    claimed: list[int] = []
    try:
        async with db.transaction() as session:
            claimed = await leases.claim(
                session,
                Recovery,
                [Recovery.status.in_(states.RECOVERY_ACTIVE)],
                owner,
                lease_seconds,
                limit=1,
            )
            if not claimed:
                return Chunk(0, False)
            recovery = await leases.lock(session, Recovery, claimed[0], *states.RECOVERY_ACTIVE)
            if recovery is None:
                return Chunk(0, True)
            return await _chunk(session, recovery)
    except Exception as exc:
        if not claimed:
            raise
        log.exception("recovery %s failed", claimed[0])
        await _fail(db, claimed[0], exc)
        return Chunk(0, True)


async def _chunk(session: AsyncSession, recovery: Recovery) -> Chunk:
    if recovery.status == RecoveryStatus.QUEUED:
        states.move_recovery(session, recovery, RecoveryStatus.RUNNING)
    column, where = scope.rows_of(recovery)
    ids = list(
        (
            await session.scalars(
                select(column)
                .where(*where, column > recovery.cursor, column <= recovery.last_id)
                .order_by(column)
                .limit(CHUNK)
            )
        ).all()
    )
    if recovery.kind == RecoveryKind.RECOVER:
        queued = await _recover(session, recovery, ids)
    else:
        queued = await replay_chunk(session, recovery, ids)
    recovery.done += queued
    if ids:
        recovery.cursor = ids[-1]
    if len(ids) < CHUNK:
        states.move_recovery(
            session, recovery, RecoveryStatus.DONE, f"{recovery.done} of {recovery.total} queued"
        )
    else:
        leases.release(recovery)  # the next chunk is anyone's
    return Chunk(queued, True)


async def _recover(session: AsyncSession, recovery: Recovery, ids: list[int]) -> int:
    """Queue the failed deliveries in `ids` again, as a redelivery does: a fresh attempt budget,
    their total_attempts and attempts trail kept."""
    if not ids:
        return 0
    request_ids = (
        await session.scalars(
            select(Delivery.request_id).where(Delivery.id.in_(ids), Delivery.request_id.is_not(None))
        )
    ).all()
    moved = await states.move_deliveries(
        session,
        [Delivery.id.in_(ids)],
        (DeliveryStatus.DELIVERY_FAILED,),
        DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=utcnow(),
        last_error=None,
        delivered_at=None,
        **leases.RELEASED,
    )
    detail = {"via": "recovery", "recovery_id": recovery.id}
    await audit.note_requests(session, [i for i in request_ids if i is not None], "redeliver", detail)
    return moved


async def replay_chunk(session: AsyncSession, recovery: Recovery, ids: list[int]) -> int:
    """A new delivery of each request in `ids` to the replay's target; none twice (the unique
    (replay_id, request_id) holds even if the cursor did not)."""
    made = set(
        (
            await session.scalars(
                select(Delivery.request_id).where(
                    Delivery.replay_id == recovery.id, Delivery.request_id.in_(ids)
                )
            )
        ).all()
    )
    now = utcnow()
    rows = []
    for request_id in ids:
        row = results.delivery_row(request_id, recovery.target, now)
        if row is not None and request_id not in made:
            rows.append({**row, "replay_id": recovery.id})
    if rows:
        await session.execute(insert(Delivery), rows)
        detail = {"via": "replay", "recovery_id": recovery.id}
        await audit.note_requests(session, [row["request_id"] for row in rows], "replay", detail)
    return len(rows)


async def _fail(db: Database, recovery_id: int, exc: Exception) -> None:
    """End a recovery whose chunk raised: failed, with the error, instead of failing for ever."""
    try:
        async with db.transaction() as session:
            recovery = await leases.lock(session, Recovery, recovery_id, *states.RECOVERY_ACTIVE)
            if recovery is not None:
                recovery.error = f"{type(exc).__name__}: {exc}"[:2000]
                states.move_recovery(session, recovery, RecoveryStatus.FAILED, "a chunk failed")
    except Exception:
        log.exception("could not mark recovery %s failed; it is tried again", recovery_id)
