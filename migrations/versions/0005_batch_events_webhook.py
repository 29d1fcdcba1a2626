"""batch events webhook: terminal batch events waiting to be announced, and their deliveries

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WAITING = sa.text("announce")


def upgrade() -> None:
    with op.batch_alter_table("batch_events") as batch:
        batch.add_column(sa.Column("announce", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Only the few events still waiting are indexed: the announcer reads exactly those.
    op.create_index(
        "ix_batch_events_announce",
        "batch_events",
        ["id"],
        postgresql_where=_WAITING,
        sqlite_where=_WAITING,
    )
    with op.batch_alter_table("deliveries") as batch:
        # A delivery carries either a request's result or a batch event (BATCH_EVENTS_WEBHOOK_URL).
        batch.alter_column("request_id", existing_type=sa.BigInteger(), nullable=True)
        batch.add_column(
            sa.Column(
                "batch_event_id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                sa.ForeignKey("batch_events.id", ondelete="CASCADE", name="fk_deliveries_batch_event_id"),
                nullable=True,
            )
        )
        batch.create_index("ix_deliveries_batch_event_id", ["batch_event_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_batch_event_id")
        batch.drop_constraint("fk_deliveries_batch_event_id", type_="foreignkey")
        batch.drop_column("batch_event_id")
    op.execute("DELETE FROM deliveries WHERE request_id IS NULL")
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("request_id", existing_type=sa.BigInteger(), nullable=False)
    op.drop_index("ix_batch_events_announce", table_name="batch_events")
    with op.batch_alter_table("batch_events") as batch:
        batch.drop_column("announce")
