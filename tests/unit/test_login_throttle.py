"""The login form's throttle (issue 29): per client address, overall, and only for a window."""

from __future__ import annotations

from app.core.rules.login_throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_waits_after_too_many_wrong_keys_until_the_window_passes() -> None:
    clock = Clock()
    throttle = LoginThrottle(per_client=3, overall=100, window=60, clock=clock)
    for _ in range(3):
        assert throttle.wait("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
        clock.now += 1
    assert throttle.wait("10.0.0.1") == 57  # until the first of the three is 60 s old
    assert throttle.wait("10.0.0.2") == 0  # another client is not held up
    clock.now += 57
    assert throttle.wait("10.0.0.1") == 0


def test_all_clients_together_are_capped() -> None:
    clock = Clock()
    throttle = LoginThrottle(per_client=10, overall=5, window=30, clock=clock)
    for n in range(5):
        throttle.failed(f"10.0.0.{n}")
    assert throttle.wait("10.0.0.99") == 30
    clock.now += 30
    assert throttle.wait("10.0.0.99") == 0


def test_clients_gone_quiet_are_forgotten() -> None:
    clock = Clock()
    throttle = LoginThrottle(per_client=2, overall=3, window=10, clock=clock)
    for n in range(4):
        throttle.failed(f"10.0.0.{n}")
    clock.now += 11
    throttle.failed("10.0.0.9")
    assert set(throttle.failures) == {"10.0.0.9"}
