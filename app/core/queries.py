"""Read side: what the API and UI show. Keyset-paginated, no writes."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import not_found
from app.db.models import Batch, BatchEvent, Delivery, DeliveryAttempt, Request
from app.db.session import Database


@dataclass(slots=True)
class RequestDetail:
    request: Request
    delivery: Delivery | None
    attempts: list[DeliveryAttempt] = field(default_factory=list)


@dataclass(slots=True)
class BatchDetail:
    batch: Batch
    events: list[BatchEvent]


async def request_and_delivery(session: AsyncSession, custom_id: str) -> tuple[Request, Delivery | None]:
    """A request by custom_id and its latest delivery; NotFound when there is no such request."""
    request = await session.scalar(select(Request).where(Request.custom_id == custom_id))
    if request is None:
        raise not_found("request", custom_id)
    delivery = await session.scalar(
        select(Delivery).where(Delivery.request_id == request.id).order_by(Delivery.id.desc()).limit(1)
    )
    return request, delivery


async def request_detail(db: Database, custom_id: str) -> RequestDetail:
    """A request with its delivery and every delivery attempt."""
    async with db.transaction() as session:
        request, delivery = await request_and_delivery(session, custom_id)
        attempts = []
        if delivery is not None:
            attempts = list(
                (
                    await session.scalars(
                        select(DeliveryAttempt)
                        .where(DeliveryAttempt.delivery_id == delivery.id)
                        .order_by(DeliveryAttempt.number)
                    )
                ).all()
            )
    return RequestDetail(request, delivery, attempts)


async def batch_detail(db: Database, batch_id: int) -> BatchDetail:
    """A batch with its timeline."""
    async with db.transaction() as session:
        batch = await session.get(Batch, batch_id)
        if batch is None:
            raise not_found("batch", batch_id)
        events = (
            await session.scalars(
                select(BatchEvent).where(BatchEvent.batch_id == batch_id).order_by(BatchEvent.id)
            )
        ).all()
    return BatchDetail(batch, list(events))


async def list_batches(
    db: Database, *, status: str | None = None, before_id: int | None = None, limit: int = 50
) -> list[Batch]:
    """Batches newest first; pass the last id seen as `before_id` for the next page."""
    stmt = select(Batch).order_by(Batch.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(Batch.status == status)
    if before_id is not None:
        stmt = stmt.where(Batch.id < before_id)
    async with db.transaction() as session:
        return list((await session.scalars(stmt)).all())
