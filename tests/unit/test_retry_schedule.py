"""DELIVERY_RETRY_SCHEDULE: the default spans about a day (issue 28, part 3), bad schedules are
refused with what is wrong, and an upgrade keeps a configured exponential backoff."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.channels.base import SendResult
from app.core.attempts import retry_delay
from app.ground.config import Settings
from app.ground.retry_schedule import parse_waits
from app.ground.statuses import Outcome

RETRYABLE = SendResult(Outcome.RETRYABLE_FAILURE)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_default_schedule_retries_for_about_a_day() -> None:
    default = settings()
    assert default.retry_waits == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert default.delivery_max_attempts == len(default.retry_waits) + 1
    assert 24 * 3600 < sum(default.retry_waits) < 30 * 3600


def test_waits_follow_the_schedule_less_up_to_a_fifth_and_the_last_repeats() -> None:
    policy = settings(delivery_retry_schedule="10s,1m,2h", delivery_max_attempts=10)
    for attempts, full in ((1, 10), (2, 60), (3, 7200), (4, 7200), (9, 7200)):
        waits = [retry_delay(policy, attempts, RETRYABLE) for _ in range(200)]
        assert all(0.8 * full <= wait <= full for wait in waits), (attempts, min(waits), max(waits))
        assert max(waits) - min(waits) > 0.05 * full  # jittered, not one value


def test_retry_after_is_honoured_up_to_the_longest_wait() -> None:
    policy = settings(delivery_retry_schedule="10s,1m,2h")
    asked = SendResult(Outcome.RETRYABLE_FAILURE, retry_after_seconds=90)
    assert retry_delay(policy, 1, asked) == 90
    too_long = SendResult(Outcome.RETRYABLE_FAILURE, retry_after_seconds=86400)
    assert retry_delay(policy, 1, too_long) == 7200


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("5s,soon", "'soon' is not a wait such as 30s, 5m, 2h or 1d"),
        ("5s,,1m", "'' is not a wait"),
        ("8d", "each wait must be from 0 to 7 days"),
        ("-1s", "each wait must be from 0 to 7 days"),
        ("nan", "each wait must be from 0 to 7 days"),
        (",".join(["1s"] * 100), "give from 1 to 99 waits"),
    ],
)
def test_a_bad_schedule_is_refused_saying_why(schedule: str, message: str) -> None:
    with pytest.raises(ValidationError, match="delivery_retry_schedule") as info:
        settings(delivery_retry_schedule=schedule)
    assert message in str(info.value)


def test_units_and_bare_seconds() -> None:
    assert parse_waits("1.5s, 2m ,3H,1d,7") == (1.5, 120, 10800, 86400, 7)


def test_an_upgrade_keeps_a_configured_exponential_backoff() -> None:
    # Set before DELIVERY_RETRY_SCHEDULE existed: the same waits as then (without jitter).
    old = settings(delivery_backoff_base_seconds=2, delivery_backoff_max_seconds=20, delivery_max_attempts=6)
    assert old.retry_waits == (2, 4, 8, 16, 20)
    both = settings(delivery_backoff_base_seconds=2, delivery_retry_schedule="1m")
    assert both.retry_waits == (60,)  # the schedule wins when both are set


def test_a_backoff_saved_in_the_ui_before_the_schedule_is_kept() -> None:
    from app.core.rules.effective import apply

    stored = {"delivery_backoff_base_seconds": 1.0, "delivery_max_attempts": 4}
    assert apply(settings(), stored).retry_waits == (1, 2, 4)
    # Saved next to a schedule, the schedule is what counts.
    stored = {**stored, "delivery_retry_schedule": "7s"}
    assert apply(settings(), stored).retry_waits == (7,)
