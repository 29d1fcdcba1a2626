"""remote file delete retries: attempts, next time and last error on batches

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 05:00:00

An OpenAI batch's remote files whose delete failed at its end were tried once and never again;
the delete is now retried with backoff, a bounded number of times, and retention purges a batch
only once its remote files are deleted (app.core.runs.openai.remote_files, app.core.retention).
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("files_delete_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("files_delete_next_at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True))
        )
        batch.add_column(sa.Column("files_delete_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        for name in ("files_delete_error", "files_delete_next_at", "files_delete_attempts"):
            batch.drop_column(name)
