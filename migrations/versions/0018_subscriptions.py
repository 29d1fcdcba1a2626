"""subscriptions, and several deliveries per batch event

Revision ID: 0018
Revises: 0015
Create Date: 2026-12-07 02:40:00

Issue 28 part 5: a batch event may go to several destinations (BATCH_EVENTS_WEBHOOK_URL, a
drop-in batch's own completion webhook, the operator's subscriptions), so deliveries.batch_event_id
is no longer unique. `subscriptions` holds what the operator subscribed; an event delivery names
the subscription it is for.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC, JsonB
from alembic import op

revision: str = "0018"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", ID, sa.Identity(always=False, start=1, increment=1), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", JsonB, nullable=False),
        sa.Column("filters", JsonB, nullable=False),
        sa.Column("description", sa.String(length=200), server_default="", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_batch_event_id")
        batch.create_index("ix_deliveries_batch_event_id", ["batch_event_id"], unique=False)
        batch.add_column(sa.Column("subscription_id", ID, nullable=True))
        batch.create_foreign_key(
            "fk_deliveries_subscription_id", "subscriptions", ["subscription_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_deliveries_subscription_id", ["subscription_id"], unique=False)


def downgrade() -> None:
    # Back to one delivery per batch event: fails if an event went to several destinations.
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_batch_event_id")
        batch.create_index("ix_deliveries_batch_event_id", ["batch_event_id"], unique=True)
        batch.drop_constraint("fk_deliveries_subscription_id", type_="foreignkey")
        batch.drop_index("ix_deliveries_subscription_id")
        batch.drop_column("subscription_id")
    op.drop_table("subscriptions")
