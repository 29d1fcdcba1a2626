"""A batch's requests as lines: the one JSONL input line, and the lines still to run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute

from app.backends.base import BatchLine
from app.db.models import Request
from app.db.planner import unindexed
from app.db.session import Database
from app.ground import jsontext
from app.ground.statuses import RequestStatus

# Lines read per page while a batch runs: enough to keep every concurrency slot busy.
LINES_PAGE = 500


def input_line(custom_id: str, url: str, body: dict[str, Any]) -> str:
    """One line of an OpenAI batch input file (also what a request's size is measured on)."""
    return jsontext.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


async def unfinished_lines(db: Database, batch_id: int, page: int = LINES_PAGE) -> AsyncIterator[BatchLine]:
    """The batch's requests that have no result yet, as backend lines, read a page at a time
    (each in its own short transaction) as the run takes them: a batch of 100 MiB of bodies is
    never in memory at once."""
    after = 0
    while True:
        async with db.transaction() as session:
            columns = (Request.id, Request.custom_id, Request.endpoint, Request.body)
            rows = (
                await session.execute(batch_page(columns, batch_id, RequestStatus.PROCESSING, after, page))
            ).all()
        for rid, cid, url, body in rows:
            yield BatchLine(rid, cid, url, body)
        if len(rows) < page:
            return
        after = rows[-1][0]


def batch_page(
    columns: tuple[InstrumentedAttribute[Any], ...], batch_id: int, status: str, after: int, limit: int
) -> Select[Any]:
    """The batch's next `limit` requests in `status` past id `after`, in id order: one range of
    the batch's ids (ix_requests_batch_id: batch_id, id), never
    the status index, which holds that status's requests of every batch (a million, with every
    batch running)."""
    return (
        select(*columns)
        .where(Request.batch_id == batch_id, unindexed(Request.status) == status, Request.id > after)
        .order_by(Request.id)
        .limit(limit)
    )
