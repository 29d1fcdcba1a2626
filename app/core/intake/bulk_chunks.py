"""Storing a bulk body's valid rows, a chunk at a time, one transaction each, in input order,
while the caller goes on checking the items after them (bulk.accept_all).

At most one chunk is being stored at a time, and a chunk starts only once the one before it has
committed: ids still follow input order, and a failure midway leaves a clean cut (everything
before it stored, nothing after). What overlaps is the app's checking of chunk N+1 with the
database's work on chunk N, which used to add up instead (docs/benchmarks.md, "Bulk on
PostgreSQL"). The task storing a chunk makes progress only when the caller yields to the event
loop, which it does every few hundred items.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.intake import bulk_store
from app.core.intake.accept import already_accepted
from app.core.intake.group_commit import Taken
from app.core.rules.errors import Problem
from app.core.rules.owners import Caller
from app.db.session import Database
from app.ground import metrics
from app.ground.clock import utcnow
from app.ground.statuses import RequestStatus

log = logging.getLogger(__name__)

ORIGIN = "api"
PENDING = str(RequestStatus.PENDING)

Chunk = list[tuple[int, bulk_store.Row]]  # (index in the body, row)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item's answer: accepted (with its new id) or rejected (with every problem)."""

    index: int
    custom_id: str | None
    id: int | None = None
    problems: tuple[Problem, ...] = ()

    @property
    def status(self) -> str:
        return PENDING if self.id is not None else "rejected"


@dataclass(slots=True)
class Chunks:
    """The chunks of one body, stored one after another; each item's answer goes into `results`
    (at its index) as its chunk commits.

    If storing fails after a chunk was committed, the committed items stay accepted; the rest
    are answered `not_stored`, to be sent again (a resend of an accepted item answers
    duplicate_custom_id, already accepted). If the first chunk fails, nothing was stored and
    the error is raised (by `put` or `finish`)."""

    db: Database
    caller: Caller
    opened: Callable[[Any], Any]  # opens sealed header values (to compare with a stored row)
    results: list[ItemResult | None]
    created_at: datetime = field(default_factory=utcnow)
    _task: asyncio.Task[None] | None = None
    _chunk: Chunk = field(default_factory=list)
    _stored_any: bool = False
    # PostgreSQL: one connection for every chunk (a checkout pings the server first); one that
    # saw a failure or a cancellation is discarded, never reused.
    _held: AsyncConnection | None = None
    _broken: bool = False
    _failed: bool = False

    @property
    def started(self) -> bool:
        """A chunk was handed over already."""
        return self._task is not None or self._stored_any or self._failed

    @property
    def busy(self) -> bool:
        """A chunk is being stored (the caller should yield to let it progress)."""
        return self._task is not None and not self._task.done()

    async def put(self, chunk: Chunk) -> None:
        """Start storing `chunk` once the chunk before it has committed."""
        await self._wait()
        if not chunk:
            return
        if self._failed:
            self._not_stored(chunk)
            return
        self._chunk = chunk
        self._task = asyncio.create_task(self._store(chunk))

    async def finish(self) -> None:
        """Wait for the last chunk."""
        await self._wait()

    async def close(self) -> None:
        """Stop a chunk still being stored (the body's handling failed or was cancelled: that
        error is the one to raise, as when the store ran in line) and give back the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it as never retrieved
            self._broken = True
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(Exception):  # a connection already gone needs no closing
                if self._broken:
                    await held.invalidate()
                await held.close()

    async def _wait(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await task
        except Exception:
            self._broken = True
            if not self._stored_any:
                raise
            log.exception("bulk intake: a chunk failed after others were stored; answered not_stored")
            self._failed = True
            self._not_stored(self._chunk)
        else:
            self._stored_any = True

    def _not_stored(self, chunk: Chunk) -> None:
        for index, row in chunk:
            self.results[index] = ItemResult(index, row.custom_id, problems=(_not_stored(index),))

    async def _store(self, chunk: Chunk) -> None:
        """Insert one chunk (committed) and answer its items: accepted, or duplicate of a stored one."""
        rows = [row for _, row in chunk]
        if self._held is None and self.db.is_postgres:
            self._held = await self.db.engine.connect()
        try:
            ids = await bulk_store.insert(self.db, rows, ORIGIN, self.created_at, self.caller, self._held)
        except Exception as exc:
            # Written past SQLAlchemy's events (app.db.writes) on PostgreSQL: /health told here.
            self.db.writes.refused(exc)
            raise
        self.db.writes.committed()
        metrics.ACCEPTED.labels(ORIGIN).inc(len(ids))
        kept = await bulk_store.kept(self.db, [r for r in rows if r.custom_id not in ids], self.caller.scope)
        for index, row in chunk:
            new_id = ids.get(row.custom_id)
            if new_id is not None:
                self.results[index] = ItemResult(index, row.custom_id, id=new_id)
            else:
                problem = _taken(row, kept.get(row.custom_id), f"/{index}/custom_id", self.opened)
                self.results[index] = ItemResult(index, row.custom_id, problems=(problem,))


def _taken(row: bulk_store.Row, kept: Taken | None, pointer: str, opened: Callable[[Any], Any]) -> Problem:
    """A custom_id already stored: by this very request (a resend) or by another one."""
    mine = {"endpoint": row.endpoint, "body": row.body, "delivery": json.loads(row.delivery)}
    return already_accepted(row.custom_id, kept is not None and kept.same_as(mine, opened), pointer)


def _not_stored(index: int) -> Problem:
    return Problem(
        "not_stored",
        "Not stored",
        "Storing failed after earlier items of this body were accepted; this item was not "
        "stored. Send it again.",
        f"/{index}",
    )
