"""Sends in flight: every delivery holds a slot of its own from its claim until its attempt is
recorded, so a receiver that hangs holds up its own slots and nobody else's deliveries.

DELIVERY_CONCURRENCY slots in all, at most DELIVERY_DESTINATION_CONCURRENCY of them per
destination (a webhook origin, a RabbitMQ queue or exchange): a batch of 50,000 results finishing
at once does not flood its one receiver, and a receiver that stopped answering cannot take every
slot. Claims stay batched (one claim fills every free slot) and so do records (the attempts that
ended while the last group was written are written together), but no send waits for another.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from app.channels.base import Channel, Message, SendResult
from app.core import delivery as outbox
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.config import Settings
from app.ground.logs import bound
from app.ground.statuses import Outcome

log = logging.getLogger(__name__)

# At most this many attempts are recorded in one transaction; more that ended wait for the next.
RECORD_GROUP_MAX = 500


class Dispatcher:
    """Claims due deliveries into free slots and sends each on its own; one per worker."""

    def __init__(
        self,
        db: Database,
        owner: str,
        settings: Callable[[], Settings],
        channels: Mapping[str, Channel],
        wake: Callable[[], None],
        retry_at: Callable[[datetime], None],
    ) -> None:
        self.db, self.owner, self.channels = db, owner, channels
        self._settings = settings
        self._wake = wake  # run the delivery step again: slots freed while deliveries wait
        self._retry_at = retry_at  # the earliest retry a record scheduled
        self._claimed: dict[int, str] = {}  # row id → destination, from claim until recorded
        self._per_destination: collections.Counter[str] = collections.Counter()
        self._waiting = False  # the last claim left due deliveries behind
        self._ended: asyncio.Queue[outbox.Sent] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._recorder: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        """Deliveries claimed and not yet recorded."""
        return len(self._claimed)

    async def deliver_due(self) -> None:
        """Fill the free slots with due deliveries and start sending each."""
        settings = self._settings()
        room = settings.delivery_concurrency - len(self._claimed)
        if room <= 0:
            self._waiting = True
            return
        per_destination = settings.delivery_destination_concurrency
        full = {key for key, n in self._per_destination.items() if n >= per_destination}
        taking: collections.Counter[str] = collections.Counter()
        seen = 0

        def take(destination: str) -> bool:
            nonlocal seen
            seen += 1
            if self._per_destination[destination] + taking[destination] >= per_destination:
                return False
            taking[destination] += 1
            return True

        claimed = await outbox.claim_due(self.db, self.owner, settings, self.channels, room, full, take)
        # Left behind: a claim cut short by the room, a destination at its limit (full, or filled
        # by this claim). Any of them is worth another claim as soon as a slot is free.
        self._waiting = seen == room or len(claimed) < seen or bool(full)
        for row_id, message in claimed:
            self._claimed[row_id] = message.destination
            self._per_destination[message.destination] += 1
            task = asyncio.create_task(self._send(row_id, message), name=f"send {message.delivery_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if claimed and self._recorder is None:
            self._recorder = asyncio.create_task(self._record_ended(), name="record deliveries")

    async def _send(self, row_id: int, message: Message) -> None:
        with bound(delivery_id=message.delivery_id, custom_id=message.custom_id):
            started_at, t0 = utcnow(), time.perf_counter()
            try:
                result = await self.channels[message.target["type"]].send(message)
            except Exception as exc:  # a channel bug must still end in an audited attempt
                result = SendResult(Outcome.RETRYABLE_FAILURE, error=f"{type(exc).__name__}: {exc}")
        duration_ms = int((time.perf_counter() - t0) * 1000)
        self._ended.put_nowait(outbox.Sent(message, row_id, result, started_at, duration_ms))

    async def _record_ended(self) -> None:
        """Record the attempts that ended, in groups, and give their slots back."""
        while True:
            group = [await self._ended.get()]
            while not self._ended.empty() and len(group) < RECORD_GROUP_MAX:
                group.append(self._ended.get_nowait())
            try:
                earliest = await outbox.record(self.db, self.owner, self._settings(), group)
            except Exception:
                # Still leased to us: sent again once the lease runs out (at least once).
                log.exception("could not record %d delivery attempts; they are sent again later", len(group))
                earliest = None
            for item in group:
                destination = self._claimed.pop(item.row_id)
                self._per_destination[destination] -= 1
                if not self._per_destination[destination]:
                    del self._per_destination[destination]
            if earliest is not None:
                self._retry_at(earliest)
            if self._waiting:
                self._wake()

    async def stop(self) -> None:
        """Stop every send and the recorder; what was not recorded is sent again after its lease
        (the worker gives the leases back at once)."""
        tasks = [*self._tasks, *([self._recorder] if self._recorder else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._recorder = None
