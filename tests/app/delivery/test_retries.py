"""Pins the webhook delivery retry policy, read from the deliveries and delivery_attempts rows.

The backoff is long (tens of seconds) so no retry happens on its own during a test: each retry is
brought forward by moving the delivery's next_attempt_at back in the database. The scheduled time
is bounded causally, not by timing: it was computed after the attempt started and before the test
saw the attempt recorded, so `started_at + least <= next_attempt_at <= observed_at + most`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from app.db.models import Delivery, DeliveryAttempt, Request
from app.ground.config import Settings
from testkit import RunningApp, StartApp, fast_settings, wait_until
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

SCHEDULE = (40.0, 80.0, 100.0)  # DELIVERY_RETRY_SCHEDULE
BASE = SCHEDULE[0]
CAP = max(SCHEDULE)  # Retry-After is honoured up to the schedule's longest wait


@dataclass
class Attempt:
    number: int
    started_at: datetime
    outcome: str
    http_status: int | None
    error: str | None


@dataclass
class State:
    id: int
    status: str
    attempts: int
    total_attempts: int
    next_attempt_at: datetime | None
    log: list[Attempt]


async def delivery_state(app: RunningApp, custom_id: str) -> State | None:
    async with app.db.transaction() as session:
        row = (
            await session.execute(
                select(
                    Delivery.id,
                    Delivery.status,
                    Delivery.attempts,
                    Delivery.total_attempts,
                    Delivery.next_attempt_at,
                )
                .join(Request, Request.id == Delivery.request_id)
                .where(Request.custom_id == custom_id)
            )
        ).one_or_none()
        if row is None:
            return None
        attempts = (
            await session.execute(
                select(
                    DeliveryAttempt.number,
                    DeliveryAttempt.started_at,
                    DeliveryAttempt.outcome,
                    DeliveryAttempt.http_status,
                    DeliveryAttempt.error,
                )
                .where(DeliveryAttempt.delivery_id == row.id)
                .order_by(DeliveryAttempt.number)
            )
        ).all()
    return State(
        row.id,
        row.status,
        row.attempts,
        row.total_attempts,
        row.next_attempt_at,
        [Attempt(*a) for a in attempts],
    )


async def after_attempt(app: RunningApp, custom_id: str, number: int) -> tuple[State, datetime]:
    """Wait until attempt `number` is recorded; returns the state and when the test saw it."""
    seen: list[State] = []

    async def recorded() -> bool:
        state = await delivery_state(app, custom_id)
        if state is None or state.total_attempts < number:
            return False
        seen.append(state)
        return True

    await wait_until(recorded, timeout=30, what=f"delivery attempt {number} of {custom_id} recorded")
    observed_at = datetime.now(UTC)
    state = seen[-1]
    assert state.total_attempts == number and len(state.log) == number
    return state, observed_at


async def bring_forward(app: RunningApp, state: State) -> None:
    """Make the retrying delivery due now (only if it has not moved on meanwhile)."""
    async with app.db.transaction() as session:
        moved = await session.execute(
            update(Delivery)
            .where(Delivery.id == state.id, Delivery.total_attempts == state.total_attempts)
            .values(next_attempt_at=datetime.now(UTC))
        )
        assert moved.rowcount == 1


def settings_for(database_url: str, inference: InferenceStandin, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "delivery_retry_schedule": ",".join(f"{w:g}s" for w in SCHEDULE),
        "delivery_max_attempts": 8,
        **overrides,
    }
    return fast_settings(database_url, inference.url + "/v1", **values)  # type: ignore[attr-defined]


def assert_between(value: datetime | None, low: datetime, high: datetime) -> None:
    assert value is not None
    assert low <= value <= high, f"{value.isoformat()} not within [{low.isoformat()}, {high.isoformat()}]"


async def test_waits_follow_the_schedule_with_jitter_and_its_last_wait_repeats(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    receiver.status_for["bo/1"] = 503
    async with start_app(settings_for(database_url, inference)) as app:
        assert (await app.submit("bo/1", receiver.url + "/hook")).status_code == 202
        # attempt n waits uniform(0.8, 1) * the schedule's n-th wait: 40 -> [32, 40], 80 -> [64, 80],
        # 100 -> [80, 100], then the last wait again.
        for number, full in ((1, 40.0), (2, 80.0), (3, 100.0), (4, 100.0)):
            state, observed_at = await after_attempt(app, "bo/1", number)
            attempt = state.log[-1]
            assert (state.status, state.attempts) == ("retrying", number)
            assert (attempt.number, attempt.outcome, attempt.http_status) == (
                number,
                "retryable_failure",
                503,
            )
            assert attempt.error == "receiver answered 503"
            assert_between(
                state.next_attempt_at,
                attempt.started_at + timedelta(seconds=full * 0.8),
                observed_at + timedelta(seconds=full),
            )
            await bring_forward(app, state)
        state, _ = await after_attempt(app, "bo/1", 5)
        assert [a.outcome for a in state.log] == ["retryable_failure"] * 5
        assert [r.headers["x-batchgate-attempt"] for r in receiver.received] == ["1", "2", "3", "4", "5"]
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


def http_date(seconds_from_now: float) -> tuple[str, datetime]:
    """An HTTP date (whole seconds) and the instant it names."""
    when = (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).replace(microsecond=0)
    return format_datetime(when, usegmt=True), when


@pytest.mark.parametrize("status", [503, 429])
@pytest.mark.parametrize(
    ("retry_after", "wait"), [("70", 70.0), ("500", CAP)], ids=["seconds", "seconds-over-the-cap"]
)
async def test_retry_after_in_seconds_is_honoured_up_to_the_cap(
    database_url: str,
    inference: InferenceStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    status: int,
    retry_after: str,
    wait: float,
) -> None:
    receiver.status_for["ra/1"] = status
    receiver.retry_after_for["ra/1"] = retry_after
    async with start_app(settings_for(database_url, inference)) as app:
        assert (await app.submit("ra/1", receiver.url + "/hook")).status_code == 202
        state, observed_at = await after_attempt(app, "ra/1", 1)
        attempt = state.log[0]
        assert (state.status, attempt.outcome, attempt.http_status) == (
            "retrying",
            "retryable_failure",
            status,
        )
        assert_between(
            state.next_attempt_at,
            attempt.started_at + timedelta(seconds=wait),
            observed_at + timedelta(seconds=wait),
        )


async def test_retry_after_zero_retries_at_once_instead_of_backing_off(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    receiver.status_for["ra0/1"] = 503
    receiver.retry_after_for["ra0/1"] = "0"
    # Without the header the second attempt would wait at least 800 s, far past after_attempt's deadline.
    settings = settings_for(database_url, inference, delivery_retry_schedule="1000s", delivery_max_attempts=2)
    async with start_app(settings) as app:
        assert (await app.submit("ra0/1", receiver.url + "/hook")).status_code == 202
        state, _ = await after_attempt(app, "ra0/1", 2)
        assert [a.outcome for a in state.log] == ["retryable_failure"] * 2
        assert (state.status, state.next_attempt_at) == ("delivery_failed", None)  # 2 = DELIVERY_MAX_ATTEMPTS


@pytest.mark.parametrize("ahead", [75.0, 86400.0], ids=["date", "date-over-the-cap"])
async def test_retry_after_as_an_http_date_is_honoured_up_to_the_cap(
    database_url: str,
    inference: InferenceStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    ahead: float,
) -> None:
    value, when = http_date(ahead)
    receiver.status_for["rd/1"] = 503
    receiver.retry_after_for["rd/1"] = value
    async with start_app(settings_for(database_url, inference)) as app:
        assert (await app.submit("rd/1", receiver.url + "/hook")).status_code == 202
        state, observed_at = await after_attempt(app, "rd/1", 1)
        attempt = state.log[0]
        assert (state.status, attempt.outcome) == ("retrying", "retryable_failure")
        if ahead > CAP:
            assert_between(
                state.next_attempt_at,
                attempt.started_at + timedelta(seconds=CAP),
                observed_at + timedelta(seconds=CAP),
            )
        else:
            # The wait is (date - time of reading the answer), added at the time of recording.
            assert_between(state.next_attempt_at, when, when + (observed_at - attempt.started_at))


async def test_408_is_retried(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    receiver.status_for["r408/1"] = 408
    async with start_app(settings_for(database_url, inference)) as app:
        assert (await app.submit("r408/1", receiver.url + "/hook")).status_code == 202
        state, observed_at = await after_attempt(app, "r408/1", 1)
        attempt = state.log[0]
        assert (state.status, state.attempts) == ("retrying", 1)
        assert (attempt.outcome, attempt.http_status, attempt.error) == (
            "retryable_failure",
            408,
            "receiver answered 408",
        )
        assert_between(
            state.next_attempt_at,
            attempt.started_at + timedelta(seconds=BASE * 0.8),
            observed_at + timedelta(seconds=BASE),
        )
        detail = (await app.client.get("/api/requests/r408/1")).json()
        assert detail["delivery"]["status"] == "retrying"
        assert detail["delivery"]["last_error"] == "receiver answered 408"


@pytest.mark.parametrize("status", [400, 404, 410, 301])
async def test_other_4xx_and_3xx_fail_at_once_even_with_retry_after(
    database_url: str,
    inference: InferenceStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    status: int,
) -> None:
    receiver.status_for["perm/1"] = status
    receiver.retry_after_for["perm/1"] = "1"
    async with start_app(settings_for(database_url, inference)) as app:
        assert (await app.submit("perm/1", receiver.url + "/hook")).status_code == 202
        state, _ = await after_attempt(app, "perm/1", 1)
        attempt = state.log[0]
        assert (state.status, state.attempts, state.next_attempt_at) == ("delivery_failed", 1, None)
        assert (attempt.outcome, attempt.http_status) == ("permanent_failure", status)
        assert attempt.error == f"receiver answered {status}"
        assert [r.status for r in receiver.received] == [status]
        detail = (await app.client.get("/api/requests/perm/1")).json()
        assert detail["delivery"]["status"] == "delivery_failed"
        assert [a["outcome"] for a in detail["delivery"]["attempt_log"]] == ["permanent_failure"]


@pytest.mark.parametrize("status", [503, 429])
async def test_a_receiver_that_asks_not_to_retry_is_not_retried(
    database_url: str,
    inference: InferenceStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    status: int,
) -> None:
    # Svix's delivery control: `webhook-delivery: abort-message` on an answer ends the retries.
    receiver.status_for["abort/1"] = status
    receiver.headers_for["abort/1"] = {"webhook-delivery": "Abort-Message"}
    receiver.retry_after_for["abort/1"] = "1"
    async with start_app(settings_for(database_url, inference)) as app:
        assert (await app.submit("abort/1", receiver.url + "/hook")).status_code == 202
        state, _ = await after_attempt(app, "abort/1", 1)
        assert (state.status, state.attempts, state.next_attempt_at) == ("delivery_failed", 1, None)
        attempt = state.log[0]
        assert (attempt.outcome, attempt.http_status) == ("permanent_failure", status)
        asked = "asked not to retry (webhook-delivery: abort-message)"
        assert attempt.error == f"receiver answered {status} and {asked}"
