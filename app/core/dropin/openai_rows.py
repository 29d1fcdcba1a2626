"""Inserting an OpenAI-face batch's requests as its input file is read: each chunk of lines is
parsed in a worker thread while the one before it is written, through the driver.

SQLAlchemy's executemany cost as much CPU as the database's own work (binding each row's
parameters, its JSON and datetime processors; bench.dropin's profile), and reading a chunk then
writing it left the disk idle while Python parsed and Python idle while SQLite wrote. The rows
are bound as the driver takes them now: the body is already JSON text, the rest shared by the
batch. PostgreSQL: COPY (binary) straight into requests, whose custom_ids are new (the batch's
own scope, each unique in the file: validation saw them before they are written). SQLite: one
executemany of the chunk. Both run inside the caller's transaction, which commits or rolls back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.dropin.openai_input import Line, Reader
from app.core.rules.states import R, batch_scope
from app.db.models import Batch
from app.ground import jsontext

# What the batch's requests start as: in it, not sent, no delivery of their own (the batch's
# output file is their result).
NO_DELIVERY = {"type": "none"}
COLUMNS = (
    "scope", "owner", "custom_id", "origin", "backend", "endpoint", "model", "body", "body_bytes",
    "delivery", "status", "batch_id", "inference_attempts", "resubmits", "created_at",
)  # fmt: skip
_SQLITE_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

Write = Callable[[list[Line]], Awaitable[None]]


async def writer(session: AsyncSession, batch: Batch) -> Write:
    """What writes lines as `batch`'s requests on the session's connection (its transaction)."""
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    dialect = connection.dialect
    bind = DateTimeUTC(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    created = bind(batch.created_at) if bind else batch.created_at
    head = (batch_scope(batch.id), batch.owner)
    tail = (jsontext.dumps(NO_DELIVERY), R.BATCHED.value, batch.id, 0, 0, created)
    origin, backend = batch.origin, batch.backend

    def records(lines: list[Line]) -> list[tuple[Any, ...]]:
        return [(*head, c, origin, backend, u, m, j, n, *tail) for c, u, m, j, n in lines]

    if dialect.name == "postgresql":

        async def copy(lines: list[Line]) -> None:
            await driver.copy_records_to_table("requests", records=records(lines), columns=COLUMNS)

        return copy

    async def executemany(lines: list[Line]) -> None:
        await (await driver.executemany(_SQLITE_INSERT, records(lines))).close()

    return executemany


async def insert_all(write: Write, reader: Reader, first: list[Line], chunk: int) -> int:
    """Write `first`, then every chunk the reader hands over, reading the next while the last
    is written; how many were written. The reader stops handing over at the first problem."""
    count, lines = 0, first
    pending: asyncio.Future[list[Line]] | None = None
    try:
        while lines:
            pending = asyncio.ensure_future(asyncio.to_thread(reader.take, chunk))
            await write(lines)
            count += len(lines)
            lines = await pending
            pending = None
    finally:
        if pending is not None:
            # A write failed (or this was cancelled): the thread still reads its chunk; let it
            # finish before the file closes, and drop what it read or raised.
            await asyncio.wait({pending})
            if not pending.cancelled():
                pending.exception()
    return count
