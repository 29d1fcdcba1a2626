"""owners: API keys in teams, each team's work its own

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 05:30:00

Issue 29, per-key isolation: every request, batch and file records the team (owner) whose key
created it ('' for an admin key, or none: what every existing row is, so single-key setups see
no change). Batches never mix owners, so the building-batch group gains the owner. `owners`
holds each team's limits (enqueued tokens, spend budget).

Columns are added with plain ALTER TABLE ... ADD COLUMN (a constant default), never by copying a
table: a large requests table upgrades in moments on both databases.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNED = ("requests", "batches", "files", "api_keys")
BUILDING = sa.text("status = 'building'")


def upgrade() -> None:
    for table in OWNED:
        op.add_column(table, sa.Column("owner", sa.String(length=64), nullable=False, server_default=""))
    op.drop_index("ix_requests_group_pending", table_name="requests")
    op.create_index(
        "ix_requests_group_pending", "requests", ["status", "backend", "endpoint", "model", "owner", "id"]
    )
    op.create_index("ix_requests_owner_id", "requests", ["owner", "id"])
    op.drop_index("uq_batches_building_group", table_name="batches")
    op.create_index(
        "uq_batches_building_group",
        "batches",
        ["backend", "endpoint", "model", "owner"],
        unique=True,
        postgresql_where=BUILDING,
        sqlite_where=BUILDING,
    )
    op.create_index("ix_batches_owner_id", "batches", ["owner", "id"])
    op.create_table(
        "owners",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("max_enqueued_tokens", sa.BigInteger(), nullable=True),
        sa.Column("budget_usd", sa.Float(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_owners")),
    )


def downgrade() -> None:
    op.drop_table("owners")
    op.drop_index("ix_batches_owner_id", table_name="batches")
    op.drop_index("uq_batches_building_group", table_name="batches")
    op.create_index(
        "uq_batches_building_group",
        "batches",
        ["backend", "endpoint", "model"],
        unique=True,
        postgresql_where=BUILDING,
        sqlite_where=BUILDING,
    )
    op.drop_index("ix_requests_owner_id", table_name="requests")
    op.drop_index("ix_requests_group_pending", table_name="requests")
    op.create_index("ix_requests_group_pending", "requests", ["status", "backend", "endpoint", "model", "id"])
    for table in OWNED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("owner")
