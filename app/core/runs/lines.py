"""A batch's requests as lines: the one JSONL input line, and the lines still to run."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import BatchLine
from app.core.rules.states import RequestStatus
from app.db.models import Request


def input_line(custom_id: str, url: str, body: dict[str, Any]) -> str:
    """One line of an OpenAI batch input file (also what a request's size is measured on)."""
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": url, "body": body}, separators=(",", ":")
    )


async def unfinished_lines(session: AsyncSession, batch_id: int) -> list[BatchLine]:
    """The batch's requests that have no result yet, as backend lines."""
    rows = await session.execute(
        select(Request.id, Request.custom_id, Request.endpoint, Request.body)
        .where(Request.batch_id == batch_id, Request.status == RequestStatus.PROCESSING)
        .order_by(Request.id)
    )
    return [BatchLine(rid, cid, url, body) for rid, cid, url, body in rows]
