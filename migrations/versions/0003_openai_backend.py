"""openai backend: remote bookkeeping and usage on batches, resubmits and line numbers on requests

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:30:00
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTERS = ("token_limit_retries", "output_repolls")
_USAGE = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("remote_status", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("next_attempt_at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True))
        )
        batch.add_column(sa.Column("wait_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("estimated_tokens", sa.BigInteger(), nullable=True))
        for name in _COUNTERS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("cancel_sent", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(
            sa.Column("files_deleted_at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True))
        )
        for name in _USAGE:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("resubmits", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("batch_line", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("batch_line")
        batch.drop_column("resubmits")
    with op.batch_alter_table("batches") as batch:
        for name in (
            *reversed(_USAGE),
            "files_deleted_at",
            "cancel_sent",
            *reversed(_COUNTERS),
            "estimated_tokens",
            "wait_reason",
            "next_attempt_at",
            "remote_status",
        ):
            batch.drop_column(name)
