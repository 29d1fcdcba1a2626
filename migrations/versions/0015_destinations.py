"""destinations: per-destination limits, circuit breaker and signing secrets, with a timeline

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 02:30:00

Issue 28: a destination (a webhook origin, a RabbitMQ queue or exchange) gets overrides of its
concurrency and rate limit, a circuit breaker that holds its deliveries while it is down, and its
own signing secret with a rotation window. destination_events is its timeline.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def identity() -> sa.Identity:
    return sa.Identity(always=False, start=1, increment=1)


def upgrade() -> None:
    op.create_table(
        "destinations",
        sa.Column("id", ID, identity(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("rate_per_second", sa.Float(), nullable=True),
        sa.Column("breaker", sa.String(length=16), server_default="closed", nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("opened_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("probe_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("signing_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret_until", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_destinations")),
        sa.UniqueConstraint("key", name=op.f("uq_destinations_key")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "destination_events",
        sa.Column("id", ID, identity(), nullable=False),
        sa.Column("destination_id", ID, nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("worker", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["destinations.id"],
            name=op.f("fk_destination_events_destination_id_destinations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_destination_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_destination_events_destination_id"), "destination_events", ["destination_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_destination_events_destination_id"), table_name="destination_events")
    op.drop_table("destination_events")
    op.drop_table("destinations")
