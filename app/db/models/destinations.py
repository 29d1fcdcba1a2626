"""Where deliveries go and what steers them: destinations (limits, breaker, secrets), event
subscriptions and recoveries, with their timelines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from advanced_alchemy.base import IdentityBase
from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.models.ids import IDS_NEVER_REUSED


class Destination(IdentityBase):
    """One receiver (deliveries.destination: a webhook origin, a RabbitMQ queue or exchange):
    the operator's overrides of its limits, its circuit breaker and its signing secrets. A row
    is made the first time an attempt to it is recorded, or when an operator sets something."""

    __tablename__ = "destinations"

    key: Mapped[str] = mapped_column(String(300), unique=True)
    # Overrides of DELIVERY_DESTINATION_CONCURRENCY and DELIVERY_DESTINATION_RATE; None: the default.
    concurrency: Mapped[int | None] = mapped_column(Integer)
    rate_per_second: Mapped[float | None] = mapped_column(Float)
    # The circuit breaker (app.core.rules.states.BREAKER_TRANSITIONS): closed sends, open holds
    # its deliveries until probe_at (None: until an operator resumes it), probing lets one through.
    breaker: Mapped[str] = mapped_column(String(16), default="closed", server_default="closed")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    opened_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    probe_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    # Signing secrets (Standard Webhooks `whsec_…`), encrypted at rest when a key is configured;
    # None: the global WEBHOOK_SECRET. The previous one is sent too until previous_secret_until.
    signing_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_until: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC)

    __table_args__ = IDS_NEVER_REUSED


class DestinationEvent(IdentityBase):
    """One row per breaker change of a destination (and per operator change): its timeline."""

    __tablename__ = "destination_events"

    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTimeUTC)
    worker: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = IDS_NEVER_REUSED


class Subscription(IdentityBase):
    """An operator's subscription of a webhook URL to event types (request.succeeded,
    request.failed, batch.*, destination.*), optionally only for some models, backends and
    origins (app.core.subscriptions)."""

    __tablename__ = "subscriptions"

    url: Mapped[str] = mapped_column(Text)
    # Event types, a family as `batch.*`; [`*`]: every event.
    event_types: Mapped[list[str]] = mapped_column(JsonB)
    # {"model": [...], "backend": [...], "origin": [...]}: an event matches a filter it names
    # when its own value is one of the listed; a filter left out matches everything.
    filters: Mapped[dict[str, list[str]]] = mapped_column(JsonB)
    description: Mapped[str] = mapped_column(String(200), default="", server_default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC)

    __table_args__ = IDS_NEVER_REUSED


class Recovery(IdentityBase):
    """An operator's bulk action on deliveries, worked through in chunks by the recover step:
    recover (queue a destination's delivery_failed deliveries again) or replay (new deliveries
    of finished requests' results to a new target). Its status moves by
    app.core.rules.states.RECOVERY_TRANSITIONS; recovery_events is its timeline."""

    __tablename__ = "recoveries"

    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    # Its scope. recover: destination and created_at in [since, until). replay: batch_id, or
    # completed_at in [since, until); and the target it sends to (a delivery config).
    destination: Mapped[str | None] = mapped_column(String(300))
    batch_id: Mapped[int | None] = mapped_column(BigInteger)
    since: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    until: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    target: Mapped[dict[str, Any] | None] = mapped_column(JsonB)
    # Set while queued or running, unique: asking again for the same thing finds this one.
    active_key: Mapped[str | None] = mapped_column(String(400), unique=True)
    # Rows (deliveries, or requests for a replay) with ids in (cursor, last_id] are still to do.
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    via: Mapped[str] = mapped_column(String(16), default="api")
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    finished_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    leased_until: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    leased_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = IDS_NEVER_REUSED


class RecoveryEvent(IdentityBase):
    """One row per status change of a recovery: its timeline."""

    __tablename__ = "recovery_events"

    recovery_id: Mapped[int] = mapped_column(ForeignKey("recoveries.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTimeUTC)
    worker: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = IDS_NEVER_REUSED
