"""What the operator keeps: settings overrides, uploaded and produced files, API keys, UI sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from advanced_alchemy.base import DefaultBase, IdentityBase
from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.models.ids import IDS_NEVER_REUSED


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
    # The team whose key uploaded it, or whose batch wrote it ('' for an admin key or none).
    owner: Mapped[str] = mapped_column(String(64), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC)

    __table_args__ = (Index("ix_files_purpose_created", "purpose", "created_at"),)


class ApiKey(IdentityBase):
    """An API key created in the UI. Only its SHA-256 digest is kept: the key is shown once."""

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(100))
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256 of the key
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to recognise it
    # The team it belongs to: it sees and is charged for only its team's work. '' is an admin key.
    owner: Mapped[str] = mapped_column(String(64), default="", server_default="")
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


class Owner(DefaultBase):
    """A team of API keys and its limits, checked at intake (app.core.owners). Made when a key
    of the team is created; usage is not kept here but read from its requests and batches."""

    __tablename__ = "owners"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Input tokens (estimated) of its unfinished requests, at most; None: no limit.
    max_enqueued_tokens: Mapped[int | None] = mapped_column(BigInteger)
    # Estimated spend on batch APIs (its batches still kept), at most, in USD; None: no budget.
    budget_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC)
