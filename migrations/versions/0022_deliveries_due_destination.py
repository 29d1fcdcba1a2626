"""deliveries: which destinations have deliveries due, and (PostgreSQL) the due ones in time order

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 15:00:00

The delivery claim leaves out the destinations already at their share of the claimed deliveries
(app.core.dispatch). Walking the due deliveries in time order past every one of those to find
another destination's read the whole backlog of the full ones: 50 ms a claim at 100,000 pending
on SQLite, several a second, and delivery slowed as the backlog grew. With this index the claim
first asks, one index seek a destination, whether any other destination has a delivery due
(app.core.delivery), and skips the claim when none has.

PostgreSQL only: the due deliveries (pending or retrying) by next_attempt_at, a partial index.
PostgreSQL cannot read (status, next_attempt_at) in time order across two statuses, so every
claim read and sorted all the due deliveries for its first 64 (58 ms at 100,000 due; 0.7 with
this index, which the claim's literal statuses match). SQLite reads (status, next_attempt_at)
in order one status at a time, stopping at the claim's limit, and needs no more.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_deliveries_due_destination"
DUE_AT = "ix_deliveries_due_at"  # PostgreSQL only (migrations/env.py, OPTIONAL_INDEXES)


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(INDEX, ["status", "destination", "next_attempt_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE INDEX {DUE_AT} ON deliveries (next_attempt_at) WHERE status IN ('pending', 'retrying')"
        )


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {DUE_AT}")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
