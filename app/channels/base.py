"""What a channel is given and what it gives back. Channels never touch the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from app.ground.statuses import Outcome
from app.net.outbound import Adapter

EXCERPT_BYTES = 2048


@dataclass(frozen=True, slots=True)
class Message:
    """One delivery attempt's content: the same bytes for every attempt of a delivery."""

    delivery_id: str
    custom_id: str | None  # None for a batch event
    attempt: int
    body: bytes
    target: dict[str, Any]
    destination: str = ""  # what its limits count by (app.net.destinations.destination_of)
    # The Standard Webhooks secrets to sign with, each signature sent (the destination's own,
    # and during a rotation the previous one too); GLOBAL_SECRET stands for the channel's own
    # (WEBHOOK_SECRET, or the batch events one). Empty: the channel's own alone.
    signing_secrets: tuple[str, ...] = ()


# In Message.signing_secrets: the channel's own secret for the message.
GLOBAL_SECRET = ""


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one attempt achieved, as recorded in delivery_attempts."""

    outcome: Outcome
    http_status: int | None = None
    error: str | None = None
    response_excerpt: str | None = None
    retry_after_seconds: float | None = None


class Channel(Adapter, Protocol):
    """Where results go: one delivery attempt in, its outcome out."""

    timeout_seconds: float

    @property
    def available(self) -> bool:
        """False while the channel cannot send at all (its deliveries wait, unclaimed)."""
        ...

    async def send(self, message: Message) -> SendResult: ...


def excerpt(data: bytes | str) -> str:
    """At most EXCERPT_BYTES of a response, decoded leniently."""
    raw = data.encode() if isinstance(data, str) else data
    return raw[:EXCERPT_BYTES].decode("utf-8", errors="replace")
