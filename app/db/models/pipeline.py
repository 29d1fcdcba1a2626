"""The pipeline's tables: batches, requests, their deliveries, and the timelines and audit
trails of each."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from advanced_alchemy.base import IdentityBase
from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.models.ids import IDS_NEVER_REUSED


class Batch(IdentityBase):
    """A group of requests run together on one backend."""

    __tablename__ = "batches"

    backend: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    origin: Mapped[str] = mapped_column(String(32), default="api")
    # The team whose key created its requests ('' for an admin key or none): batches never mix
    # owners, so an owner's batches, actions and spend are its own (app.core.rules.owners).
    owner: Mapped[str] = mapped_column(String(64), default="", server_default="")
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
            "owner",
            unique=True,
            postgresql_where=text("status = 'building'"),
            sqlite_where=text("status = 'building'"),
        ),
        Index("ix_batches_owner_id", "owner", "id"),
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
    # The team whose key created it ('' for an admin key or none): only that team's keys see it.
    owner: Mapped[str] = mapped_column(String(64), default="", server_default="")
    backend: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    body: Mapped[dict[str, Any]] = mapped_column(JsonB)
    body_bytes: Mapped[int] = mapped_column(Integer)
    # Where its result goes: one destination (an object), or several (a list of them: fan-out).
    delivery: Mapped[dict[str, Any] | list[dict[str, Any]] | None] = mapped_column(JsonB)
    status: Mapped[str] = mapped_column(String(32))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"))
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
        Index("ix_requests_group_pending", "status", "backend", "endpoint", "model", "owner", "id"),
        # A team's own list, newest first.
        Index("ix_requests_owner_id", "owner", "id"),
        # A batch's requests, read a page at a time in id order while it runs (migration 0023).
        Index("ix_requests_batch_id", "batch_id", "id"),
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
        # Which destinations have deliveries due, one seek each (app.core.delivery.others_due).
        Index("ix_deliveries_due_destination", "status", "destination", "next_attempt_at"),
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
