"""What every outbound adapter shares: the Retry-After parser (both forms, always finite, always
capped) and the client pool. (The httpcore JSON POST, against a server:
tests/app/runs/test_local_backend.py.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from app.net.outbound import RETRYABLE_STATUS, ClientPool, retry_after_seconds


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),  # a wait in the past is no wait
        ("999999", 120.0),  # capped
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),  # never an undefined wait
        ("inf", None),
        ("-inf", None),
    ],
)
def test_retry_after_in_seconds(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, cap=120.0) == expected


def test_retry_after_as_an_http_date() -> None:
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55.0 <= retry_after_seconds(in_a_minute, cap=120.0) <= 60.0  # type: ignore[operator]
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert retry_after_seconds(past, cap=120.0) == 0.0
    far = format_datetime(datetime.now(UTC) + timedelta(days=3), usegmt=True)
    assert retry_after_seconds(far, cap=120.0) == 120.0


def test_which_statuses_are_retried() -> None:
    assert {408, 429, 500, 502, 503, 599} <= RETRYABLE_STATUS
    assert not {400, 401, 403, 404, 409, 413, 422} & RETRYABLE_STATUS


class Closing:
    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_a_client_pool_lends_each_client_to_one_caller_at_most_size_at_once() -> None:
    pool: ClientPool[Closing] = ClientPool(2, Closing)
    async with pool.client() as a, pool.client() as b:
        assert a is not b
        third = asyncio.create_task(_borrow(pool))
        await asyncio.sleep(0)  # one turn: the third caller is waiting for a slot
        assert not third.done()
    lent = await third
    assert lent in (a, b)  # a returned client is lent again, none is made
    async with pool.client() as again:
        assert again is lent  # the most recently returned first: its connections are the warm ones
    await pool.aclose()
    assert a.closed and b.closed


async def _borrow(pool: ClientPool[Closing]) -> Closing:
    async with pool.client() as client:
        return client
