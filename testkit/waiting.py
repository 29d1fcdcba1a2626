"""Waiting for something to become true, with a deadline: the one polling helper of the suite."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

Condition = Callable[[], bool | Awaitable[bool]]


async def wait_until(
    condition: Condition,
    timeout: float = 30.0,  # noqa: ASYNC109 (a polling deadline, not a cancellation scope)
    interval: float = 0.05,
    what: str | Callable[[], str] = "",
) -> None:
    """Poll `condition` (plain or async) until it holds; after `timeout` seconds raise TimeoutError
    naming `what` (a text, or a function giving one so the message can show the state at the end)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await holds(condition):
        if loop.time() > deadline:
            described = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout}s waiting for {described or condition}")
        await asyncio.sleep(interval)


async def holds(condition: Condition) -> bool:
    """The condition's current value, awaited when it is async."""
    value = condition()
    if inspect.isawaitable(value):
        value = await value
    return bool(value)
