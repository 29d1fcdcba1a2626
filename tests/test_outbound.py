"""The one Retry-After parser every adapter uses: both forms, always finite, always capped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from app.outbound import RETRYABLE_STATUS, retry_after_seconds


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
