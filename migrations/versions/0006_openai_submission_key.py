"""openai submission key: the key a remote batch is found by when the create's answer was lost

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("submission_key", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("submission_key_at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True))
        )


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("submission_key_at")
        batch.drop_column("submission_key")
