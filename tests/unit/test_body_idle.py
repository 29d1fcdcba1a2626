"""app.web.bodies.within, the idle deadline of every body read: an answer in time is passed on,
a read that waits past the deadline gives None (the guard then answers 408, tests/app/test_slow_bodies.py),
and a cancellation from elsewhere is never taken for a deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.web.bodies import within

MESSAGE = {"type": "http.request", "body": b"{}", "more_body": False}


async def test_an_answer_in_time_is_passed_on_and_its_timer_dropped() -> None:
    loop = asyncio.get_running_loop()

    async def receive() -> Any:
        return MESSAGE

    assert await within(30, receive, loop) is MESSAGE

    async def later() -> Any:
        await asyncio.sleep(0)  # one turn of the loop: the read waits
        return MESSAGE

    assert await within(30, later, loop) is MESSAGE
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_read_past_the_deadline_gives_none_and_the_task_goes_on() -> None:
    never = asyncio.get_running_loop().create_future()

    async def receive() -> Any:
        return await never

    assert await within(0.01, receive, asyncio.get_running_loop()) is None
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert never.cancelled()
    await asyncio.sleep(0)  # not cancelled afterwards either


async def test_a_cancellation_from_elsewhere_propagates() -> None:
    loop = asyncio.get_running_loop()
    reading = asyncio.Event()

    async def receive() -> Any:
        reading.set()
        return await loop.create_future()

    read = asyncio.create_task(within(30, receive, loop))
    await reading.wait()
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
