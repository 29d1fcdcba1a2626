"""recoveries: bulk recovery of a destination's failed deliveries, and replays to a new target

Revision ID: 0017
Revises: 0018
Create Date: 2026-12-07 02:40:00

Issue 28 part 4: an operator queues again every delivery_failed delivery of a destination since a
time (recover), or sends the results of a batch or a time range again to a new target (replay), as
a background action worked through in chunks by the recover step. recovery_events is its timeline;
deliveries.replay_id marks the extra deliveries a replay made (one per request and replay).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC, JsonB
from alembic import op

revision: str = "0017"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def id_column() -> sa.Column[int]:
    """The primary key every table here has (ids never reused: AUTOINCREMENT on SQLite)."""
    return sa.Column("id", ID, sa.Identity(always=False, start=1, increment=1), nullable=False)


def upgrade() -> None:
    op.create_table(
        "recoveries",
        id_column(),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("destination", sa.String(length=300), nullable=True),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.Column("since", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("until", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("target", JsonB, nullable=True),
        sa.Column("active_key", sa.String(length=400), nullable=True),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("started_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("finished_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("leased_until", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("leased_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recoveries")),
        sa.UniqueConstraint("active_key", name=op.f("uq_recoveries_active_key")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_recoveries_status"), "recoveries", ["status"], unique=False)
    op.create_table(
        "recovery_events",
        id_column(),
        sa.Column("recovery_id", ID, nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("worker", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["recovery_id"],
            ["recoveries.id"],
            name=op.f("fk_recovery_events_recovery_id_recoveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_recovery_events_recovery_id"), "recovery_events", ["recovery_id"], unique=False)
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("replay_id", ID, nullable=True))
        batch.create_foreign_key(
            op.f("fk_deliveries_replay_id_recoveries"), "recoveries", ["replay_id"], ["id"]
        )
        batch.create_unique_constraint(
            op.f("uq_deliveries_replay_id_request_id"), ["replay_id", "request_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint(op.f("uq_deliveries_replay_id_request_id"), type_="unique")
        batch.drop_constraint(op.f("fk_deliveries_replay_id_recoveries"), type_="foreignkey")
        batch.drop_column("replay_id")
    op.drop_index(op.f("ix_recovery_events_recovery_id"), table_name="recovery_events")
    op.drop_table("recovery_events")
    op.drop_index(op.f("ix_recoveries_status"), table_name="recoveries")
    op.drop_table("recoveries")
