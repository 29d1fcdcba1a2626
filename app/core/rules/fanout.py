"""Fan-out: a request's delivery config names one destination (an object) or several (a list of
them). Each destination gets its own delivery row, with its own attempts and status; these are
the rules every step reads a config by, and how a request's deliveries add up to one status."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar

from app.ground.statuses import DeliveryStatus as D

# How many destinations one request's result may go to: each is its own delivery, attempts and
# all, so a long list multiplies the outbox's work for one result.
FANOUT_MAX = 10


def destination_identity(config: dict[str, Any]) -> tuple[str, ...]:
    """What makes two destinations the same: a webhook's URL, or a RabbitMQ queue, or exchange
    and routing key. Their headers do not: the same URL twice would get the result twice."""
    if config.get("type") == "webhook":
        return ("webhook", str(config.get("webhook_url")))
    return (
        "rabbitmq",
        str(config.get("rabbitmq_queue") or ""),
        str(config.get("rabbitmq_exchange") or ""),
        str(config.get("routing_key") or ""),
    )


def destinations_of(config: Any) -> list[dict[str, Any]]:
    """The stored config's entries, one per destination ([] for none or no config)."""
    if isinstance(config, list):
        return [entry for entry in config if isinstance(entry, dict)]
    return [config] if isinstance(config, dict) and config.get("type") != "none" else []


class _Sent(Protocol):
    """A delivery row, or a row of its id-ordered columns with its target."""

    @property
    def target(self) -> dict[str, Any]: ...
    @property
    def status(self) -> str: ...


Row = TypeVar("Row", bound=_Sent)


def current(rows: Sequence[Row]) -> list[Row]:
    """A request's current deliveries, from all its rows oldest first: the newest per destination
    (a retried batch's new delivery, not the superseded one), in the order they were made."""
    newest = {destination_identity(row.target): row for row in rows}
    # A superseded delivery is followed by a new one, made when its request's result is: it
    # stands for its destination only while none exists (its config may have changed since).
    live = [row for row in newest.values() if row.status != D.SUPERSEDED]
    kept = {id(row) for row in live or newest.values()}
    return [row for row in rows if id(row) in kept]


def overall_status(statuses: Iterable[str]) -> str | None:
    """A request's delivery status from its destinations' current deliveries: still on its way
    (retrying, else pending) while any is, else delivery_failed if any failed for good, else
    superseded while its request runs again, else delivered once every one is. None when it has
    none."""
    found = set(statuses)
    for status in (D.RETRYING, D.PENDING, D.DELIVERY_FAILED, D.SUPERSEDED):
        if status in found:
            return status
    return D.DELIVERED if found else None
