"""A batch's input, output and error files as JSONL, streamed in chunks (never whole in memory)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from sqlalchemy import select

from app.core import results
from app.core.rules.errors import not_found
from app.core.runs.lines import input_line
from app.db.models import Batch, Request
from app.db.session import Database
from app.ground.statuses import RequestStatus

Kind = Literal["input", "output", "error"]
Shape = Callable[[results.Finished], dict[str, Any]]
CHUNK_ROWS = 1000
_STATUSES: dict[str, tuple[str, ...]] = {
    "output": (RequestStatus.SUCCEEDED,),
    "error": (RequestStatus.FAILED, RequestStatus.CANCELLED, RequestStatus.EXPIRED),
}


async def batch_file(
    db: Database, batch_id: int, kind: Kind, shape: Shape = results.output_line
) -> AsyncIterator[bytes]:
    """The batch's `kind` file as an async iterator of JSONL chunks, each result line in `shape`
    (the native one unless told: a drop-in batch's files are written in OpenAI's); NotFound
    before the first byte.

    Each chunk is read in its own short transaction, so a slow download holds no lock or snapshot.
    """
    async with db.transaction() as session:
        if await session.get(Batch, batch_id) is None:
            raise not_found("batch", batch_id)
    return _chunks(db, batch_id, kind, shape)


async def _chunks(db: Database, batch_id: int, kind: Kind, shape: Shape) -> AsyncIterator[bytes]:
    after = 0
    while True:
        stmt = select(Request).where(Request.batch_id == batch_id, Request.id > after)
        if kind in _STATUSES:
            stmt = stmt.where(Request.status.in_(_STATUSES[kind]))
        async with db.transaction() as session:
            rows = (await session.scalars(stmt.order_by(Request.id).limit(CHUNK_ROWS))).all()
        if not rows:
            return
        if kind == "input":
            lines = [input_line(r.custom_id, r.endpoint, r.body) for r in rows]
        else:
            lines = [json.dumps(shape(r), separators=(",", ":")) for r in rows]
        yield ("\n".join(lines) + "\n").encode()
        after = rows[-1].id
