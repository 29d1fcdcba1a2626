"""Tables. Columns and indexes only: the rules about them live in app.core."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from advanced_alchemy.base import DefaultBase, IdentityBase
from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite's plain INTEGER PRIMARY KEY hands a deleted newest row's id to the next insert, so a
# deleted batch's id (and its requests' ids) named the next batch: an in-flight answer of the old
# one landed in the new one. AUTOINCREMENT never reuses an id; PostgreSQL's identity columns don't.
IDS_NEVER_REUSED = {"sqlite_autoincrement": True}


class Batch(IdentityBase):
    """A group of requests run together on one backend."""

    __tablename__ = "batches"

    backend: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    origin: Mapped[str] = mapped_column(String(32), default="api")
    status: Mapped[str] = mapped_column(String(32), index=True)
    request_count: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    completed_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    close_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    run_failures: Mapped[int] = mapped_column(Integer, default=0)
    remote_batch_id: Mapped[str | None] = mapped_column(String(255))
    input_file_id: Mapped[str | None] = mapped_column(String(255))
    output_file_id: Mapped[str | None] = mapped_column(String(255))
    error_file_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonB)
    # Remote (OpenAI) bookkeeping: its own status, when to look next, why a ready batch waits.
    remote_status: Mapped[str | None] = mapped_column(String(32))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    wait_reason: Mapped[str | None] = mapped_column(Text)
    estimated_tokens: Mapped[int | None] = mapped_column(BigInteger)
    token_limit_retries: Mapped[int] = mapped_column(Integer, default=0)
    output_repolls: Mapped[int] = mapped_column(Integer, default=0)
    cancel_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    files_deleted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    # Deleting the remote files at the batch's end is retried with backoff, a bounded number of
    # times (app.core.runs.openai.remote_files): tries so far, the next one, and the last failure.
    files_delete_attempts: Mapped[int] = mapped_column(Integer, default=0)
    files_delete_next_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    files_delete_error: Mapped[str | None] = mapped_column(Text)
    # The current OpenAI submission's key, sent in the create's metadata, stored before the create
    # is sent: a later attempt finds the remote batch by it instead of creating a second one.
    submission_key: Mapped[str | None] = mapped_column(String(32))
    submission_key_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    # Usage of the batch's lines, from the batch object or summed over its output lines.
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # A drop-in batch (/v1/batches, /v1/messages/batches): the face's own fields and files.
    completion_window: Mapped[str | None] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    face_metadata: Mapped[dict[str, Any] | None] = mapped_column(JsonB)
    dropin_input_file_id: Mapped[str | None] = mapped_column(String(64))
    dropin_output_file_id: Mapped[str | None] = mapped_column(String(64))
    dropin_error_file_id: Mapped[str | None] = mapped_column(String(64))
    # The create's output_expires_after: how long its output and error files live (None: 30 days).
    dropin_output_expires_seconds: Mapped[int | None] = mapped_column(Integer)
    files_written_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    status_changed_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    ready_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    finished_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    leased_until: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    leased_by: Mapped[str | None] = mapped_column(String(64))
    # Fresh at every claim: which run holds the lease. A run stores results only while the batch
    # names its holder and token (app.core.results), so a run whose lease was taken over, or whose
    # batch was cancelled or deleted, can never write into a row it no longer owns.
    lease_token: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        # One open `building` batch per group: replicas racing to create it collide here.
        Index(
            "uq_batches_building_group",
            "backend",
            "endpoint",
            "model",
            unique=True,
            postgresql_where=text("status = 'building'"),
            sqlite_where=text("status = 'building'"),
        ),
        IDS_NEVER_REUSED,
    )


class BatchEvent(IdentityBase):
    """One row per batch status change: the batch's timeline."""

    __tablename__ = "batch_events"

    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTimeUTC)
    # The process that wrote it (app.ground.identity): which replica moved the batch.
    worker: Mapped[str | None] = mapped_column(String(64))
    # A batch's end, still to be sent to BATCH_EVENTS_WEBHOOK_URL (see app.core.announcements).
    announce: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))

    __table_args__ = (
        Index(
            "ix_batch_events_announce",
            "id",
            postgresql_where=text("announce"),
            sqlite_where=text("announce"),
        ),
        IDS_NEVER_REUSED,
    )


UNFINISHED_WITH_DEADLINE = "complete_by IS NOT NULL AND status IN ('pending', 'batched', 'processing')"


class Request(IdentityBase):
    """One inference request and its outcome."""

    __tablename__ = "requests"

    custom_id: Mapped[str] = mapped_column(String(512))
    # Where custom_id is unique: '' for the native API (one global scope), else one drop-in batch.
    scope: Mapped[str] = mapped_column(String(64), default="", server_default="")
    origin: Mapped[str] = mapped_column(String(32))
    backend: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    body: Mapped[dict[str, Any]] = mapped_column(JsonB)
    body_bytes: Mapped[int] = mapped_column(Integer)
    # Where its result goes: one destination (an object), or several (a list of them: fan-out).
    delivery: Mapped[dict[str, Any] | list[dict[str, Any]] | None] = mapped_column(JsonB)
    status: Mapped[str] = mapped_column(String(32))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"), index=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JsonB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonB)
    inference_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Times it went back to a new batch (a 5xx line, an expired batch); bounded by OPENAI_RESUBMIT_MAX.
    resubmits: Mapped[int] = mapped_column(Integer, default=0)
    # Its 1-based line in the batch's uploaded input file, to read errors.data line numbers.
    batch_line: Mapped[int | None] = mapped_column(Integer)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    completed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    # When its result is due (the request's own `complete_by`); past it unfinished, it fails.
    complete_by: Mapped[datetime | None] = mapped_column(DateTimeUTC)

    __table_args__ = (
        # The batcher's scan: pending requests of one group, oldest first.
        Index("ix_requests_group_pending", "status", "backend", "endpoint", "model", "id"),
        # The UI: a status filter walks this newest first; the dashboard's per-minute chart
        # reads the last hour by created_at (an index range, not a table scan).
        Index("ix_requests_status_id", "status", "id"),
        Index("ix_requests_created_at", "created_at"),
        # The deadline sweep: unfinished requests with a complete_by (partial: finished ones
        # would make every sweep walk the history).
        Index(
            "ix_requests_complete_by",
            "complete_by",
            postgresql_where=text(UNFINISHED_WITH_DEADLINE),
            sqlite_where=text(UNFINISHED_WITH_DEADLINE),
        ),
        # The custom_id prefix search reads a range of this (bytewise on PostgreSQL, whatever the
        # collation); the contains search uses the trigram index migration 0009 adds if it can.
        Index(
            "ix_requests_custom_id", "custom_id", "id", postgresql_ops={"custom_id": "varchar_pattern_ops"}
        ),
        # The model filter, newest first.
        Index("ix_requests_model_id", "model", "id"),
        UniqueConstraint("scope", "custom_id", name="uq_requests_scope_custom_id"),
        IDS_NEVER_REUSED,
    )


class RequestEvent(IdentityBase):
    """The audit trail of operator actions on a request (cancel, redeliver, delivery config edits)."""

    __tablename__ = "request_events"

    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonB)
    at: Mapped[datetime] = mapped_column(DateTimeUTC)

    __table_args__ = IDS_NEVER_REUSED


class Delivery(IdentityBase):
    """The outbox: one row per finished request and destination, or per announced batch event."""

    __tablename__ = "deliveries"

    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    # A batch event goes to each destination that takes it (BATCH_EVENTS_WEBHOOK_URL, the batch's
    # own webhook, subscriptions): one delivery each.
    batch_event_id: Mapped[int | None] = mapped_column(
        ForeignKey("batch_events.id", ondelete="CASCADE", name="fk_deliveries_batch_event_id"), index=True
    )
    # The subscription an event delivery is for (app.core.subscriptions), deleted with it; None
    # for a result's delivery, BATCH_EVENTS_WEBHOOK_URL's and a drop-in batch's own webhook. A
    # request's event (request_id set too) is not one of its result's deliveries.
    subscription_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE", name="fk_deliveries_subscription_id"), index=True
    )
    channel: Mapped[str] = mapped_column(String(32))
    target: Mapped[dict[str, Any]] = mapped_column(JsonB)
    # What limits and health count by: the target's webhook origin or RabbitMQ queue or exchange
    # (app.net.destinations.destination_of), set with the target.
    destination: Mapped[str] = mapped_column(String(300), default="", server_default="")
    status: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    total_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    leased_until: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    leased_by: Mapped[str | None] = mapped_column(String(64))
    # The replay (app.core.recoveries) that made this extra delivery of its request; None for a
    # request's own delivery (and a batch event's). One per request and replay.
    replay_id: Mapped[int | None] = mapped_column(ForeignKey("recoveries.id"))

    __table_args__ = (
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        UniqueConstraint("replay_id", "request_id", name="uq_deliveries_replay_id_request_id"),
        # The requests list's delivery-status filter: the request ids of one status.
        Index("ix_deliveries_status_request_id", "status", "request_id"),
        IDS_NEVER_REUSED,
    )

    @property
    def public_id(self) -> str:
        """The id receivers deduplicate on (webhook-id, AMQP message_id)."""
        return delivery_public_id(self.id)


def delivery_public_id(row_id: int) -> str:
    """A delivery's public id, from its row id."""
    return f"dlv_{row_id}"


class DeliveryAttempt(IdentityBase):
    """The audit trail: one row per attempt to send a delivery."""

    __tablename__ = "delivery_attempts"

    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    duration_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    # The process that sent it (app.ground.identity).
    worker: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = IDS_NEVER_REUSED


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


class Setting(DefaultBase):
    """An operator override of one Settings field, edited in the UI; absent means the default."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JsonB)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC)


class File(DefaultBase):
    """An OpenAI-style file object: uploaded for a drop-in batch, or a batch's output or errors.
    Its bytes live under DATA_DIR at `path`; the row is what /v1/files lists."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(255))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)

    __table_args__ = (Index("ix_files_purpose_created", "purpose", "created_at"),)


class ApiKey(IdentityBase):
    """An API key created in the UI. Only its SHA-256 digest is kept: the key is shown once."""

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(100))
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256 of the key
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to recognise it
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)

    __table_args__ = IDS_NEVER_REUSED


class UiSession(DefaultBase):
    """A UI login (issue 29). The browser's cookie carries only a random token; the row, found by
    the token's digest, says which key logged in and whether logout or revocation ended it, so a
    copied cookie stops working everywhere (app.core.ui_sessions)."""

    __tablename__ = "ui_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex SHA-256 of the token
    key_digest: Mapped[str] = mapped_column(String(64), index=True)  # the key it logged in with
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    last_seen_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    ended_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)


def table_of(model: type[DeclarativeBase]) -> Table:
    """A model's table, for Core statements (SQLAlchemy types `__table__` as any FROM clause)."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table
