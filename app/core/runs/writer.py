"""One result writer for all the batches a local backend runs at once.

Each running batch flushes its results every ~100 ms or ~100 results (app.core.runs.local). Eight
batches flushing on their own made up to eighty transactions a second, most of a few results
each, and on SQLite every one of them took a turn at the one connection and a sync to disk:
delivery's transactions waited behind them (docs/benchmarks.md, "Delivery while results are
stored"). Here the flushes that arrive while a transaction runs are stored together in the next
one: one transaction, one commit for all of them. Each batch's results are still checked
against its own lease (results.record) and stored before its flush returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.backends.base import LineResult
from app.core import results
from app.core.rules.leases import Hold
from app.db.session import Database

log = logging.getLogger(__name__)


@dataclass
class _Flush:
    batch_id: int
    hold: Hold
    results: Sequence[LineResult]
    stored: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ResultWriter:
    """Stores the flushes of every running batch, those waiting together in one transaction."""

    def __init__(self, db: Database, on_results: Callable[[], None]) -> None:
        self.db = db
        self.on_results = on_results
        self._waiting: list[_Flush] = []
        self._task: asyncio.Task[None] | None = None

    async def store(self, batch_id: int, hold: Hold, lines: Sequence[LineResult]) -> int:
        """Store `lines` of the batch (with the flushes of other batches waiting meanwhile);
        returns how many were new. Raises what storing the group raised: the caller stores its
        own lines apart then, so one batch's poisoned line costs the others one retry."""
        flush = _Flush(batch_id, hold, lines)
        self._waiting.append(flush)
        if self._task is None or self._task.done():
            # A context of its own: not the log ids of the batch whose flush happened to start it.
            self._task = asyncio.create_task(
                self._write(), name="local results", context=contextvars.Context()
            )
        return await flush.stored

    async def _write(self) -> None:
        try:
            while self._waiting:
                # A flush whose run was cancelled while it waited is left out.
                group = [flush for flush in self._waiting if not flush.stored.done()]
                self._waiting = []
                if group:
                    await self._write_group(group)
        finally:
            self._fail_waiting()  # only when stopped or failed: the loop leaves none otherwise

    async def _write_group(self, group: list[_Flush]) -> None:
        try:
            async with self.db.transaction(bulk=True) as session:
                counts = [await results.record(session, f.batch_id, f.results, f.hold) for f in group]
        except Exception as exc:
            if (task := asyncio.current_task()) is not None and task.cancelling():
                self._waiting[:0] = group  # stopped, whatever the rollback raised: cancelled below
                raise asyncio.CancelledError from exc
            log.warning("results of %d batches failed to store together; each stores its own", len(group))
            for flush in group:
                if not flush.stored.done():
                    flush.stored.set_exception(exc)
            return
        except BaseException:  # cancelled (the runner stops): nothing of the group is stored
            self._waiting[:0] = group
            raise
        for flush, count in zip(group, counts, strict=True):
            if not flush.stored.done():
                flush.stored.set_result(count)
        if any(counts):
            try:
                self.on_results()
            except Exception:  # a wake that failed must not stop the writer: the tick still comes
                log.exception("could not wake the delivery step")

    def _fail_waiting(self) -> None:
        for flush in self._waiting:
            if not flush.stored.done():
                flush.stored.cancel()
        self._waiting = []

    async def stop(self) -> None:
        """Stop writing: flushes not stored are not (their lines run again after a restart)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail_waiting()
