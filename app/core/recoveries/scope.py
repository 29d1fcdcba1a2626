"""Which rows a recovery covers: its deliveries (recover) or its requests (replay)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.rules import states
from app.db.models import Delivery, Recovery, Request
from app.ground.statuses import DeliveryStatus, RecoveryKind


def recover_where(recovery: Recovery) -> list[ColumnElement[bool]]:
    """The destination's failed deliveries created in [since, until)."""
    where = [
        Delivery.destination == (recovery.destination or ""),
        Delivery.status == DeliveryStatus.DELIVERY_FAILED,
    ]
    if recovery.since is not None:
        where.append(Delivery.created_at >= recovery.since)
    if recovery.until is not None:
        where.append(Delivery.created_at < recovery.until)
    return where


def replay_where(recovery: Recovery) -> list[ColumnElement[bool]]:
    """The finished requests of its batch, or completed in [since, until): every one of them has
    a result line (its response, or the error it ended with) to send."""
    where: list[ColumnElement[bool]] = [Request.status.in_(states.REQUEST_FINISHED)]
    if recovery.batch_id is not None:
        where.append(Request.batch_id == recovery.batch_id)
    if recovery.since is not None:
        where.append(Request.completed_at >= recovery.since)
    if recovery.until is not None:
        where.append(Request.completed_at < recovery.until)
    return where


def rows_of(recovery: Recovery) -> tuple[Any, list[ColumnElement[bool]]]:
    """The id column of the rows it works through, and what selects them."""
    if recovery.kind == RecoveryKind.RECOVER:
        return Delivery.id, recover_where(recovery)
    return Request.id, replay_where(recovery)


async def measure(session: AsyncSession, recovery: Recovery) -> None:
    """Fix its scope at creation: the rows in it now (total) and the highest id among them, so
    what fails or finishes later is not swept in and the total holds."""
    column, where = rows_of(recovery)
    total, last_id = (await session.execute(select(func.count(), func.max(column)).where(*where))).one()
    recovery.total, recovery.last_id = int(total or 0), int(last_id or 0)
