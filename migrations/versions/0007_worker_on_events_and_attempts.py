"""worker on batch events and delivery attempts: which process moved a batch or sent a delivery

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("batch_events", "delivery_attempts"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("worker", sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in ("batch_events", "delivery_attempts"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("worker")
