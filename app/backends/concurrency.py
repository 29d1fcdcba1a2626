"""How many calls may be in flight to one inference server: a limit that adapts to the server.

A server's best concurrency is unknown and differs by orders of magnitude (llama.cpp serving one
request at a time, vLLM batching dozens), so the limit finds it as TCP finds a link's window
(AIMD, with the latency signal of TCP Vegas and Netflix's concurrency-limits):

- While the server keeps up, the limit grows: by half per round trip at first ("slow start"), by
  one per round trip once the server begins to queue. Keeping up is read from latency: by Little's
  law, of `limit` calls in flight, limit * (1 - no-load latency / latency) wait in the server's
  queue instead of being served. While that queue is short, a higher limit is more throughput.
- An answer that says the server is overloaded (429, 503, a timeout, a refused connection) halves
  the limit; a queue grown long, or latency past LATENCY_TOLERANCE times the no-load latency (or
  near the timeout), takes off a tenth. Either happens at most once per round trip: the calls in
  flight when the limit fell were sent under the old limit, and their answers say nothing of the
  new one.
- It stays within [1, maximum]. A fixed limit is the same object with adaptation off.

No clock and no sleep here: callers report each call's latency, which keeps the limit testable.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["ok", "overloaded", "failed"]

# Small: a server that serves one request at a time must not see a burst of calls it can only
# queue; a large one reaches its level within a few round trips of slow start.
INITIAL_LIMIT = 4
# A server past its capacity queues the calls beyond it: latency then grows with the limit while
# throughput does not. The limit grows while fewer than QUEUE_LEAST calls (or the square root of
# the limit, for a large one) are estimated to wait at the server, holds up to twice that, and
# backs off beyond, or when latency passes LATENCY_TOLERANCE times the no-load latency whatever
# the queue (a server answering one call at a time, where each call queues behind the other).
QUEUE_LEAST = 2.0
LATENCY_TOLERANCE = 2.0
SLOW_START_STEP = 0.5
OVERLOAD_FACTOR = 0.5  # TCP's halving: the server said no, so back off hard
LATENCY_FACTOR = 0.9  # a gentle step: slowness is a hint, not a refusal
# Weight of one latency sample in the smoothed latency: one sample is noise (prompts differ in
# length), about ten are a trend.
SMOOTHING = 0.1
# How fast the no-load latency may rise towards the smoothed latency per sample. The no-load
# latency is the lowest smoothed latency seen, but a changed workload (longer prompts, another
# model) changes it for good, so it must be able to rise, slowly enough not to follow a queue.
FORGETTING = 0.0002


@dataclass
class Call:
    """One call through the limit; the caller reports how it went before leaving the block."""

    epoch: int  # the limit's count of decreases when the call began
    saturated: bool = False  # the limit, not the work available, held calls back as it ended
    outcome: Outcome = "failed"  # what an unreported call (an exception) counts as: no signal
    latency: float | None = None

    def ok(self, latency: float) -> None:
        """The server answered in `latency` seconds."""
        self.outcome, self.latency = "ok", latency

    def overloaded(self) -> None:
        """The server refused or did not answer for being busy (429, 503, a timeout)."""
        self.outcome = "overloaded"

    def failed(self) -> None:
        """The call failed for its own reasons (a 400, a 500 on its input): no signal."""
        self.outcome = "failed"


class ConcurrencyLimit:
    """At most `current` calls in flight; `current` adapts within [1, maximum] unless fixed."""

    def __init__(
        self,
        maximum: int,
        *,
        adaptive: bool = True,
        initial: int = INITIAL_LIMIT,
        latency_ceiling: float = math.inf,
    ) -> None:
        if maximum < 1:
            raise ValueError(f"a concurrency limit of at least 1 is needed, not {maximum}")
        self.maximum = maximum
        self.adaptive = adaptive
        # Latency above this (seconds) backs off whatever the no-load latency: calls whose latency
        # nears the timeout would soon time out (and a timed-out call is lost work).
        self.latency_ceiling = latency_ceiling
        self._limit = float(max(1, min(initial, maximum)) if adaptive else maximum)
        self._in_flight = 0
        self._epoch = 0
        self._slow_start = True
        self._smoothed: float | None = None
        self._no_load: float | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def current(self) -> int:
        """The most calls allowed in flight now."""
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Calls waiting for room under the limit."""
        return len(self._waiters)

    @property
    def latency_ratio(self) -> float:
        """Smoothed latency over no-load latency (1.0 before any sample)."""
        if self._smoothed is None or not self._no_load:
            return 1.0
        return self._smoothed / self._no_load

    @property
    def queued(self) -> float:
        """Calls the server is estimated to hold waiting rather than serving (TCP Vegas): of
        `limit` calls in flight, those that take the latency beyond the no-load latency."""
        return self._limit * (1 - 1 / self.latency_ratio)

    def _queued_at(self, latency: float) -> float:
        return self._limit * (1 - (self._no_load or latency) / latency) if latency > 0 else 0.0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Call]:
        """Wait for room under the limit, then hold it while the block runs."""
        await self._enter()
        call = Call(self._epoch)
        try:
            yield call
        finally:
            # Netflix's rule: a limit at most half used is not what holds calls back, and
            # growing it then would walk it to the maximum untested.
            call.saturated = self._in_flight * 2 >= self.current or bool(self._waiters)
            self._in_flight -= 1
            self._learn(call)
            self._wake()

    async def _enter(self) -> None:
        while self._in_flight >= self.current:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Woken and then cancelled, it would take to its grave the wake-up meant for
                # room another waiter can use.
                self._waiters.remove(waiter)
                self._wake()
                raise
            self._waiters.remove(waiter)
        self._in_flight += 1

    def _wake(self) -> None:
        """Wake the first waiters, as many as there is room for; a waiter woken that has not run
        yet holds its room already."""
        room = self.current - self._in_flight
        for waiter in self._waiters:
            if room <= 0:
                return
            if not waiter.done():
                waiter.set_result(None)
            room -= 1

    def _learn(self, call: Call) -> None:
        if not self.adaptive:
            return
        if call.outcome == "overloaded":
            self._decrease(call, OVERLOAD_FACTOR)
        elif call.outcome == "ok" and call.latency is not None:
            self._observe(call.latency)
            self._follow_latency(call, call.latency)

    def _follow_latency(self, call: Call, latency: float) -> None:
        """Grow, hold or back off by the queue the latency shows (see the module's docstring)."""
        enough = max(QUEUE_LEAST, math.sqrt(self._limit))
        too_slow = self.latency_ratio > LATENCY_TOLERANCE or (self._smoothed or 0.0) > self.latency_ceiling
        if too_slow or self.queued > 2 * enough:
            self._decrease(call, LATENCY_FACTOR)
        elif self.queued >= enough or (self._slow_start and self._queued_at(latency) >= enough):
            # The server has begun to queue: feel for the rest. In slow start one sample
            # suffices, as the smoothed latency lags a round trip behind a limit that grows fast.
            self._slow_start = False
        elif call.saturated:
            self._increase()

    def _observe(self, latency: float) -> None:
        previous = latency if self._smoothed is None else self._smoothed
        smoothed = self._smoothed = previous + SMOOTHING * (latency - previous)
        if self._no_load is None or smoothed < self._no_load:
            self._no_load = smoothed
        else:
            self._no_load += FORGETTING * (smoothed - self._no_load)

    def _increase(self) -> None:
        # Slow start adds half a call per success, half again per round trip rather than TCP's
        # doubling: the first sign of a queue comes a round trip late, and a doubled limit would
        # have sent a round of calls into a queue that may refuse them. Then one per round trip.
        step = SLOW_START_STEP if self._slow_start else 1.0 / self._limit
        self._limit = min(float(self.maximum), self._limit + step)

    def _decrease(self, call: Call, factor: float) -> None:
        if call.epoch != self._epoch:
            return  # sent under a higher limit this round trip has already backed off from
        self._epoch += 1
        self._slow_start = False
        self._limit = max(1.0, self._limit * factor)
