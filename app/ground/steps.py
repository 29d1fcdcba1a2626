"""The scheduler's pipeline steps, by name: what an action wakes when it gives one of them work."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum


class Step(StrEnum):
    FORM = "form"  # close due batches
    SUBMIT = "submit"  # hand ready batches to their backend
    RUN = "run"  # run local batches
    POLL = "poll"  # follow remote (OpenAI) batches and collect them
    DELIVER = "deliver"  # drain the delivery outbox
    FINISH = "finish"  # expire overdue drop-in batches, write the files of ended ones, announce ends
    RECOVER = "recover"  # work through the operator's bulk recoveries and replays, a chunk at a time
    PURGE = "purge"  # delete ended batches and requests older than RETENTION_DAYS


Wake = Callable[[Step], None]


def wake_nothing(step: Step) -> None:
    """The waker of a process that runs no scheduler (SCHEDULER_ENABLED=false): replicas that
    do run one find the work on their next tick."""
