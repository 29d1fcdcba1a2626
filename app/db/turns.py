"""Turns at SQLite's one connection: who gets it next when several wait.

SQLite writes through one connection (app.db.session), so every transaction queues for it.
SQLAlchemy's asyncio pool queue is not first come, first served: a task that asks while the
connection sits returned but not yet taken by the waiter it was handed to takes it first, and
that waiter goes to the back. A task that ends a transaction and starts the next one at once
(a result writer, a page reader) kept the connection that way while others waited their turn
again and again. FairQueue hands a returned connection straight to the longest waiter.

First come, first served is still not a fair share when one kind of work asks many times at
once: a local backend runs up to eight batches, each with a result writer and a page reader,
and a delivery round (a few transactions one after the other) waited behind all of them each
time, so delivery ran at 10-25 a second while results were stored at 2,600 (docs/benchmarks.md,
"Delivery while results are stored"). BulkLane queues that kind of work among itself first, so
it holds one place in the connection's queue: any other transaction waits for at most one of
its transactions.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import await_only
from sqlalchemy.util.queue import Empty, Full, QueueCommon


class FairQueue(QueueCommon[Any]):
    """The pool's queue of idle connections, handing each returned one to the longest waiter.

    Invariant: connections wait here only while no task does (a put with a waiter hands over),
    so a get that finds one takes it without jumping anybody."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize, self.use_lifo = maxsize, use_lifo
        self._idle: collections.deque[Any] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()

    def empty(self) -> bool:
        return not self._idle

    def full(self) -> bool:
        return bool(self.maxsize) and len(self._idle) >= self.maxsize

    def qsize(self) -> int:
        return len(self._idle)

    def put_nowait(self, item: Any) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # not timed out or cancelled meanwhile
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._idle.append(item)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.put_nowait(item)  # never full: the pool only returns what it took

    def get_nowait(self) -> Any:
        if not self._idle:
            raise Empty()
        return self._idle.pop() if self.use_lifo else self._idle.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if self._idle or not block:
            return self.get_nowait()
        return await_only(self._wait(timeout))

    async def _wait(self, timeout: float | None) -> Any:  # noqa: ASYNC109 - the pool's own timeout
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout, _time_out, waiter) if timeout is not None else None
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed over just as this task was cancelled: pass it on, never lose it.
                self.put_nowait(waiter.result())
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)


def _time_out(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(Empty())  # the pool answers it with its own TimeoutError


class FairPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio queue pool with FairQueue's order."""

    _queue_class = FairQueue


class BulkLane:
    """Work that asks for the connection many times at once (the local backend's result writers
    and page readers) takes its turns one at a time: at most one of them waits in the
    connection's queue, so a transaction of anyone else waits for at most one of theirs."""

    def __init__(self) -> None:
        self._lock: asyncio.Lock | None = None

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self._lock is None:
            self._lock = asyncio.Lock()  # made on first use, in the loop that uses it
        async with self._lock:
            yield
