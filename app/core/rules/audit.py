"""The audit trail of operator actions on requests (request_events), shown on the request page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import RequestEvent
from app.ground.clock import utcnow


async def note_requests(
    session: AsyncSession, request_ids: Sequence[int], action: str, detail: dict[str, Any] | None = None
) -> None:
    """Record that `action` was done to each request (one executemany INSERT)."""
    if not request_ids:
        return
    now = utcnow()
    await session.execute(
        insert(RequestEvent),
        [{"request_id": rid, "action": action, "detail": detail, "at": now} for rid in request_ids],
    )
