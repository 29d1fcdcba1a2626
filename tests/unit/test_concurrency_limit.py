"""The adaptive concurrency limit (app.backends.concurrency), driven with reported latencies: it
grows while latency holds, halves on overload once per round trip, backs off when latency rises,
stays within [1, maximum], and holds callers beyond it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest
from pydantic import ValidationError

from app.backends.concurrency import ConcurrencyLimit
from app.ground.config import Settings
from testkit import wait_until


async def full_round(limit: ConcurrencyLimit, latency: float, outcome: str = "ok") -> None:
    """`current` calls at once (the limit is what holds them back), each reporting `outcome`."""
    async with contextlib.AsyncExitStack() as stack:
        calls = [await stack.enter_async_context(limit.slot()) for _ in range(limit.current)]
        for call in calls:
            if outcome == "ok":
                call.ok(latency)
            elif outcome == "overloaded":
                call.overloaded()


async def test_it_grows_while_latency_holds_and_never_past_the_maximum() -> None:
    limit = ConcurrencyLimit(40, initial=8)
    seen = [limit.current]
    for _ in range(20):
        await full_round(limit, 0.1)
        seen.append(limit.current)
    # Slow start: the limit grows by a good share per round trip until the maximum.
    growing = seen[: seen.index(40) + 1]
    assert all(b >= a * 1.2 for a, b in itertools.pairwise(growing[:5]))
    assert growing == sorted(set(growing))
    assert seen[-1] == 40 and max(seen) == 40


async def test_an_overload_halves_it_once_per_round_trip() -> None:
    limit = ConcurrencyLimit(64, initial=16)
    # All 16 calls in flight are refused: they were sent under the same limit, so one halving.
    await full_round(limit, 0.1, "overloaded")
    assert limit.current == 8
    await full_round(limit, 0.1, "overloaded")
    assert limit.current == 4
    for _ in range(10):
        await full_round(limit, 0.1, "overloaded")
    assert limit.current == 1  # never below one


async def test_after_backing_off_it_grows_by_one_per_round_trip() -> None:
    limit = ConcurrencyLimit(64, initial=16)
    await full_round(limit, 0.1, "overloaded")
    assert limit.current == 8
    seen = [limit.current]
    for _ in range(10):
        await full_round(limit, 0.1)
        seen.append(limit.current)
    # At most one per round trip (each success adds 1/limit), rather than slow start's half.
    assert all(0 <= b - a <= 1 for a, b in itertools.pairwise(seen))
    assert 11 <= seen[-1] <= 18


async def test_a_latency_rise_backs_it_off() -> None:
    limit = ConcurrencyLimit(64, initial=8)
    for _ in range(3):
        await full_round(limit, 0.1)
    grown = limit.current
    assert grown > 8
    for _ in range(20):  # the server queues: latency three times the no-load latency
        await full_round(limit, 0.3)
    assert limit.current < grown / 2
    assert limit.latency_ratio > 1.5


async def test_latency_near_the_ceiling_backs_it_off_with_no_baseline_to_compare() -> None:
    """A server that is slow from the first call (long generations near the timeout) gets no
    more calls than it can answer before they time out."""
    limit = ConcurrencyLimit(64, initial=4, latency_ceiling=30.0)
    for _ in range(10):
        await full_round(limit, 40.0)
    assert limit.current == 1


async def test_calls_that_are_not_held_back_do_not_grow_it() -> None:
    limit = ConcurrencyLimit(64, initial=8)
    for _ in range(50):
        async with limit.slot() as call:  # one call at a time: the limit is never what holds it
            call.ok(0.1)
    assert limit.current == 8


async def test_a_failure_of_the_call_itself_says_nothing() -> None:
    limit = ConcurrencyLimit(64, initial=8)
    for _ in range(5):
        await full_round(limit, 0.1, "failed")
    with pytest.raises(RuntimeError):
        async with limit.slot():
            raise RuntimeError("a bug in the caller")
    assert limit.current == 8 and limit.in_flight == 0


async def test_a_fixed_limit_does_not_adapt() -> None:
    limit = ConcurrencyLimit(6, adaptive=False)
    assert limit.current == 6
    await full_round(limit, 0.1, "overloaded")
    await full_round(limit, 5.0)
    assert limit.current == 6


async def test_callers_beyond_the_limit_wait_for_room() -> None:
    limit = ConcurrencyLimit(2, adaptive=False)
    release = asyncio.Event()
    entered = 0

    async def caller() -> None:
        nonlocal entered
        async with limit.slot() as call:
            entered += 1
            await release.wait()
            call.ok(0.1)

    tasks = [asyncio.create_task(caller()) for _ in range(5)]
    await wait_until(lambda: entered == 2, timeout=5, what="two callers in")
    assert limit.in_flight == 2
    # A waiter that is cancelled gives its turn away: the others still get in.
    tasks[4].cancel()
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert entered == 4 and limit.in_flight == 0


async def test_a_waiter_woken_then_cancelled_passes_its_turn_on() -> None:
    limit = ConcurrencyLimit(1, adaptive=False)
    entered: list[str] = []

    async def caller(name: str) -> None:
        async with limit.slot():
            entered.append(name)

    holder = contextlib.AsyncExitStack()
    await holder.enter_async_context(limit.slot())
    woken, next_ = asyncio.create_task(caller("woken")), asyncio.create_task(caller("next"))
    await wait_until(lambda: limit.waiting == 2, timeout=5, what="two callers waiting")
    await holder.aclose()  # wakes the first waiter, which is cancelled before it runs
    woken.cancel()
    await asyncio.wait_for(next_, timeout=5)
    assert entered == ["next"] and woken.cancelled() and limit.in_flight == 0


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrencyLimit(0)


@pytest.mark.parametrize(("given", "taken"), [("auto", "auto"), (" Auto ", "auto"), ("8", 8), (1024, 1024)])
def test_local_concurrency_is_auto_or_a_number(given: object, taken: object) -> None:
    assert Settings(local_concurrency=given).local_concurrency == taken


@pytest.mark.parametrize("given", ["0", "1025", "many", "2.5", True])
def test_local_concurrency_refuses_anything_else_saying_what_it_takes(given: object) -> None:
    with pytest.raises(ValidationError, match="must be auto or a whole number from 1 to 1024"):
        Settings(local_concurrency=given)
