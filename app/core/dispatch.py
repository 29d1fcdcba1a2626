"""Sends in flight: each delivery is sent on its own and recorded when it ends, so a receiver that
hangs holds up its own slots and nobody else's deliveries.

DELIVERY_CONCURRENCY sends at once, at most DELIVERY_DESTINATION_CONCURRENCY of them to one
destination (a webhook origin, a RabbitMQ queue or exchange) and, with a rate limit, at most that
many started a second (app.core.destinations.limits; both overridable per destination): a batch
of 50,000 results finishing at once does not flood its one receiver, and a receiver that stopped
answering cannot take every slot. A destination whose circuit breaker is open is not claimed at
all but for its probe (app.core.destinations.breaker).

Claims run ahead of the sends by as many again (the ready queue), so a slot that frees starts its
next send at once instead of waiting on the database; claims and records stay batched (one claim
tops the queue up, the attempts that ended while the last group was written are written
together).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.base import Channel, Message, SendResult
from app.core import attempts
from app.core import delivery as outbox
from app.core.destinations.limits import Bucket, DestinationLimits
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.config import Settings
from app.ground.logs import bound
from app.ground.statuses import Outcome

log = logging.getLogger(__name__)

# At most this many attempts are recorded in one transaction; more that ended wait for the next.
RECORD_GROUP_MAX = 500
# Claimed and unrecorded deliveries, at most AHEAD times the sends allowed (in all and per
# destination): those beyond the slots wait in the ready queue, for at most AHEAD - 1 sends of
# their destination, and the claim's lease covers that and their own send (outbox.Terms.sends_per_lease).
# (bench.delivery, SQLite: 0.74 of raw httpx with no queue, claiming as each slot freed; 0.90 so.)
AHEAD = 2
CLAIMS_PER_ROUND = 3


class Plan:
    """One claim's room, and a check of each delivery it finds against its destination's share
    (`take`), counting what it takes."""

    def __init__(self, room: int, held: collections.Counter[str], share: Callable[[str], int]) -> None:
        self.room, self.held, self.share = room, held, share
        self.full = {key for key, n in held.items() if n >= share(key)}
        self.taking: collections.Counter[str] = collections.Counter()
        self.seen = 0

    def take(self, destination: str) -> bool:
        self.seen += 1
        if self.held[destination] + self.taking[destination] >= self.share(destination):
            return False
        self.taking[destination] += 1
        return True

    def terms(self, probes: bool) -> outbox.Terms:
        return outbox.Terms(self.room, self.full, self.take, AHEAD, probes)


class Dispatcher:
    """Claims due deliveries ahead of the free slots and sends each on its own; one per worker."""

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
        self._wake = wake  # run the delivery step again: room freed while deliveries wait
        self._retry_at = retry_at  # the earliest retry a record scheduled
        self._claimed: dict[int, str] = {}  # row id → destination, from claim until recorded
        self._held: collections.Counter[str] = collections.Counter()  # claimed, by destination
        self._sending: collections.Counter[str] = collections.Counter()  # in flight, by destination
        self._ready: collections.deque[tuple[int, Message]] = collections.deque()
        self._waiting = False  # the last claim left due deliveries behind
        self._ended: asyncio.Queue[attempts.Sent] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._recorder: asyncio.Task[None] | None = None
        self._claiming = asyncio.Lock()  # one claim at a time counts the room
        self.limits = DestinationLimits(db)
        self._buckets: dict[str, Bucket] = {}
        self._rate_timer: asyncio.TimerHandle | None = None

    async def deliver_due(self) -> None:
        """Top the ready queue up with due deliveries and start as many sends as slots allow."""
        settings = self._settings()
        await self.limits.refresh()
        # A claim that found mostly one destination at its share tries again without it at once
        # (not a tick later): the others' deliveries are due behind those. The round's first
        # claim takes the due probes too.
        async with self._claiming:
            for round_ in range(CLAIMS_PER_ROUND):
                if not await self._claim(settings, probes=round_ == 0):
                    break
        self._start_ready(settings)

    async def _claim(self, settings: Settings, probes: bool = False) -> bool:
        """One claim into the ready queue (first the due `probes`); True when it left deliveries
        behind for a destination that filled up meanwhile, and there is room for more."""
        db, owner, channels = self.db, self.owner, self.channels
        if (plan := self._plan(settings)) is None:
            if probes:  # a probe is sent whatever the room: it holds no other delivery up
                self._queue(await outbox.claim_probes(db, owner, settings, channels), first=True)
            return False
        if not any(channel.available for channel in channels.values()):
            return False
        async with db.transaction() as session:
            claim = await outbox.claim_in(session, owner, settings, channels, plan.terms(probes))
        return self._took(plan, claim)

    def _plan(self, settings: Settings, freed: collections.Counter[str] | None = None) -> Plan | None:
        """What the next claim may take: the room and the destinations' shares as they stand,
        with `freed` (a group whose record the claim commits with) given back; None when there
        is no room (a send that ends makes room, and its record claims again)."""
        freed = freed or collections.Counter()
        room = AHEAD * settings.delivery_concurrency - len(self._claimed) + freed.total()
        if len(self._ready) >= settings.delivery_concurrency or room <= 0:
            self._waiting = True
            return None
        held = self._held.copy()
        held.subtract(freed)
        return Plan(room, held, lambda destination: self._share(settings, destination))

    def _took(self, plan: Plan, claim: outbox.Claimed) -> bool:
        """Queue what a claim leased (after its transaction committed: a claim rolled back is
        never sent); True when it left deliveries behind for a destination that filled up
        meanwhile, and there is room for more."""
        self._queue(claim.probes, first=True)
        room = plan.room - len(claim.probes)
        claimed = claim.due
        # A delivery still here from an earlier claim whose lease ran out (a slow record): its
        # lease is renewed by this claim, and it is sent and recorded once, as it already is.
        again = [(row_id, message) for row_id, message in claimed if row_id in self._claimed]
        plan.taking.subtract(message.destination for _, message in again)
        fresh = [(row_id, message) for row_id, message in claimed if row_id not in self._claimed]
        self._held.update(plan.taking)
        # Left behind: a claim cut short by the room, or a destination at its share.
        self._waiting = plan.seen >= room or len(claimed) < plan.seen or bool(plan.full)
        self._queue(fresh, counted=True)
        return len(claimed) < plan.seen and len(claimed) < room

    def _queue(self, claimed: list[tuple[int, Message]], first: bool = False, counted: bool = False) -> None:
        """Put claimed deliveries in the ready queue (a probe `first`), holding them against
        their destinations' shares (already, when `counted`)."""
        for row_id, message in claimed:
            self._claimed[row_id] = message.destination
            if not counted:
                self._held[message.destination] += 1
        if first:
            self._ready.extendleft(reversed(claimed))
        else:
            self._ready.extend(claimed)
        if claimed and self._recorder is None:
            self._recorder = asyncio.create_task(self._record_ended(), name="record deliveries")

    def _share(self, settings: Settings, destination: str) -> int:
        """The most deliveries of `destination` claimed at once: AHEAD sends for each of its
        slots, and with a rate limit no more than it may start in half a lease (the last one
        claimed must still be sent while the claim's lease lasts)."""
        limits = self.limits.of(settings, destination)
        share = AHEAD * limits.concurrency
        if limits.rate:
            share = min(share, max(1, int(limits.rate * settings.lease_seconds / 2)))
        return share

    def _start_ready(self, settings: Settings) -> None:
        """Start the ready deliveries that have a free slot, oldest first, skipping those whose
        destination has its share in flight."""
        free = settings.delivery_concurrency - self._sending.total()
        waiting: list[tuple[int, Message]] = []
        next_token = math.inf
        while free > 0 and self._ready:
            row_id, message = self._ready.popleft()
            limits = self.limits.of(settings, message.destination)
            if self._sending[message.destination] >= limits.concurrency:
                waiting.append((row_id, message))
                continue
            if limits.rate and not (bucket := self._bucket(message.destination, limits.rate)).take():
                waiting.append((row_id, message))
                next_token = min(next_token, bucket.wait())
                continue
            self._sending[message.destination] += 1
            free -= 1
            task = asyncio.create_task(self._send(row_id, message), name=f"send {message.delivery_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._ready.extendleft(reversed(waiting))
        if next_token < math.inf:
            self._start_when_a_token_comes(next_token)

    def _bucket(self, destination: str, rate: float) -> Bucket:
        bucket = self._buckets.get(destination)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[destination] = Bucket(rate)
        return bucket

    def _start_when_a_token_comes(self, delay: float) -> None:
        """Start the ready deliveries again when a rate-limited destination has its next token
        (no send ending may come to do it)."""
        loop = asyncio.get_running_loop()
        if self._rate_timer is not None and self._rate_timer.when() <= loop.time() + delay:
            return
        if self._rate_timer is not None:
            self._rate_timer.cancel()
        self._rate_timer = loop.call_later(delay, self._start_ready_again)

    def _start_ready_again(self) -> None:
        self._rate_timer = None
        self._start_ready(self._settings())

    def _hold(self, destinations: frozenset[str]) -> list[int]:
        """Take the ready deliveries of `destinations` (their breaker opened) out of the queue;
        returns their row ids, whose leases are to be given back."""
        dropped = [row_id for row_id, message in self._ready if message.destination in destinations]
        self._ready = collections.deque(
            item for item in self._ready if item[1].destination not in destinations
        )
        for row_id in dropped:
            self._forget(row_id)
        return dropped

    def _forget(self, row_id: int) -> None:
        """A claimed delivery is recorded or given back: its room is free again."""
        destination = self._claimed.pop(row_id, None)
        if destination is not None:
            self._held[destination] -= 1
            if self._held[destination] <= 0:
                del self._held[destination]

    async def _send(self, row_id: int, message: Message) -> None:
        with bound(delivery_id=message.delivery_id, custom_id=message.custom_id):
            started_at, t0 = utcnow(), time.perf_counter()
            try:
                result = await self.channels[message.target["type"]].send(message)
            except Exception as exc:  # a channel bug must still end in an audited attempt
                result = SendResult(Outcome.RETRYABLE_FAILURE, error=f"{type(exc).__name__}: {exc}")
        duration_ms = int((time.perf_counter() - t0) * 1000)
        self._ended.put_nowait(attempts.Sent(message, row_id, result, started_at, duration_ms))
        self._sending[message.destination] -= 1
        if not self._sending[message.destination]:
            del self._sending[message.destination]
        self._start_ready(self._settings())

    async def _record_ended(self) -> None:
        """Record the attempts that ended, in groups, each with the claim that refills the room
        it frees in the same transaction, and give their room back."""
        while True:
            group = [await self._ended.get()]
            while not self._ended.empty() and len(group) < RECORD_GROUP_MAX:
                group.append(self._ended.get_nowait())
            settings = self._settings()
            async with self._claiming:  # the room is counted by one claim at a time
                recorded, more = await self._record(settings, group)
            try:
                if recorded.held and (dropped := self._hold(recorded.held)):
                    await outbox.release(self.db, self.owner, dropped)
                if recorded.earliest is not None:
                    self._retry_at(recorded.earliest)
                if more:
                    self._wake()
            except Exception:  # the recorder must outlive a failed wake: the tick still comes
                log.exception("could not wake the delivery step")
            self._start_ready(settings)

    async def _record(self, settings: Settings, group: list[attempts.Sent]) -> tuple[attempts.Recorded, bool]:
        """Record `group` and claim the refill in one transaction; then forget the group and
        queue the refill (both or neither: the group stays counted until its record commits, so
        what was sent and not recorded never passes AHEAD times the slots). Returns the record
        and whether the step should claim again."""
        freed = collections.Counter(self._claimed[i.row_id] for i in group if i.row_id in self._claimed)
        plan = self._plan(settings, freed)
        refilled: list[outbox.Claimed] = []

        async def refill(session: AsyncSession) -> None:
            if plan is not None:
                terms = plan.terms(probes=False)
                refilled.append(await outbox.claim_in(session, self.owner, settings, self.channels, terms))

        try:
            recorded = await attempts.record(self.db, self.owner, settings, group, refill)
        except Exception:
            # Still leased to us: sent again once the lease runs out (at least once).
            log.exception("could not record %d delivery attempts; they are sent again later", len(group))
            recorded, refilled = attempts.Recorded(None, frozenset()), []
        for item in group:
            self._forget(item.row_id)
        if plan is None or not refilled:
            return recorded, self._waiting
        return recorded, self._took(plan, refilled[0])

    async def stop(self) -> None:
        """Stop every send and the recorder; what was not recorded is sent again after its lease
        (the worker gives the leases back at once)."""
        tasks = [*self._tasks, *([self._recorder] if self._recorder else [])]
        if self._rate_timer is not None:
            self._rate_timer.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._recorder = None
