"""request deadlines: complete_by on requests

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 21:30:00

A request may carry `complete_by` (issue 27): its batch closes early enough to make it, a batch
API whose window cannot make it is not used, and a request still unfinished when it passes ends
failed with `deadline_exceeded` (app.core.deadlines). The index serves that sweep.
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("complete_by", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True)))
    unfinished = sa.text("complete_by IS NOT NULL AND status IN ('pending', 'batched', 'processing')")
    op.create_index(
        "ix_requests_complete_by",
        "requests",
        ["complete_by"],
        postgresql_where=unfinished,
        sqlite_where=unfinished,
    )


def downgrade() -> None:
    op.drop_index("ix_requests_complete_by", table_name="requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("complete_by")
