"""The transitions table is the only way statuses change, and it refuses what it does not list."""

from __future__ import annotations

import pytest

from app.core.rules import states


@pytest.mark.parametrize(
    ("table", "allowed", "refused"),
    [
        (states.BATCH_TRANSITIONS, ("building", "ready"), ("building", "done")),
        (states.BATCH_TRANSITIONS, ("processing", "collecting"), ("done", "processing")),
        (states.REQUEST_TRANSITIONS, ("pending", "batched"), ("pending", "succeeded")),
        (states.REQUEST_TRANSITIONS, ("processing", "failed"), ("succeeded", "pending")),
        (states.DELIVERY_TRANSITIONS, ("retrying", "delivery_failed"), ("delivered", "retrying")),
    ],
)
def test_check_allows_listed_and_refuses_the_rest(
    table: dict[str, frozenset[str]], allowed: tuple[str, str], refused: tuple[str, str]
) -> None:
    states.check(table, *allowed)
    with pytest.raises(states.TransitionError):
        states.check(table, *refused)


def test_every_target_is_a_known_status() -> None:
    for table in (states.BATCH_TRANSITIONS, states.REQUEST_TRANSITIONS, states.DELIVERY_TRANSITIONS):
        for targets in table.values():
            assert targets <= table.keys()


def test_terminal_request_statuses_have_no_exit() -> None:
    for status in ("succeeded", "cancelled", "expired"):
        assert states.REQUEST_TRANSITIONS[status] == frozenset()
    # The one way back: an operator retrying a failed batch runs its failed requests again.
    assert states.REQUEST_TRANSITIONS["failed"] == frozenset({"batched"})
