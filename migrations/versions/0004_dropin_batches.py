"""drop-in batches: custom_id scopes, fixed-membership batch fields, uploaded and produced files

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 04:00:00
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FILE_IDS = ("dropin_input_file_id", "dropin_output_file_id", "dropin_error_file_id")


def _utc(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        # '' is the native API's one global scope; a drop-in batch's requests share its own scope.
        batch.add_column(sa.Column("scope", sa.String(length=64), nullable=False, server_default=""))
        batch.drop_constraint("uq_requests_custom_id", type_="unique")
        batch.create_unique_constraint("uq_requests_scope_custom_id", ["scope", "custom_id"])
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("completion_window", sa.String(length=16), nullable=True))
        batch.add_column(_utc("expires_at"))
        batch.add_column(sa.Column("face_metadata", advanced_alchemy.types.JsonB, nullable=True))
        for name in _FILE_IDS:
            batch.add_column(sa.Column(name, sa.String(length=64), nullable=True))
        batch.add_column(_utc("files_written_at"))
    op.create_table(
        "files",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column(
            "batch_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("batches.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("created_at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False),
        _utc("expires_at"),
    )
    op.create_index("ix_files_purpose_created", "files", ["purpose", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_files_purpose_created", table_name="files")
    op.drop_table("files")
    with op.batch_alter_table("batches") as batch:
        for name in (
            "files_written_at",
            *reversed(_FILE_IDS),
            "face_metadata",
            "expires_at",
            "completion_window",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("requests") as batch:
        batch.drop_constraint("uq_requests_scope_custom_id", type_="unique")
        batch.create_unique_constraint("uq_requests_custom_id", ["custom_id"])
        batch.drop_column("scope")
