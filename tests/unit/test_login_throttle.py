"""The login form's throttle (issue 29): per client address, overall, and only for a window."""

from __future__ import annotations

from app.core.rules.login_throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttled(per_client: int, overall: int, window: float, *clients: str) -> tuple[LoginThrottle, Clock]:
    """A throttle on a clock the test moves, with one wrong key already counted per `clients`."""
    clock = Clock()
    throttle = LoginThrottle(per_client=per_client, overall=overall, window=window, clock=clock)
    for client in clients:
        throttle.failed(client)
    return throttle, clock


def test_a_client_waits_after_too_many_wrong_keys_until_the_window_passes() -> None:
    throttle, clock = throttled(3, 100, 60)
    for _ in range(3):
        assert throttle.wait("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
        clock.now += 1
    assert throttle.wait("10.0.0.1") == 57  # until the first of the three is 60 s old
    assert throttle.wait("10.0.0.2") == 0  # another client is not held up
    clock.now += 57
    assert throttle.wait("10.0.0.1") == 0


def test_all_clients_together_are_capped() -> None:
    throttle, clock = throttled(10, 5, 30, *(f"10.0.0.{n}" for n in range(5)))
    assert throttle.wait("10.0.0.99") == 30
    clock.now += 30
    assert throttle.wait("10.0.0.99") == 0


def test_clients_gone_quiet_are_forgotten() -> None:
    throttle, clock = throttled(2, 3, 10, "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")
    clock.now += 11
    throttle.failed("10.0.0.9")
    assert set(throttle.failures) == {"10.0.0.9"}
