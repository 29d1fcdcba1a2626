"""deliveries (status, destination, next_attempt_at): which destinations have deliveries due

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 15:00:00

The delivery claim leaves out the destinations already at their share of the claimed deliveries
(app.core.dispatch). Walking the due deliveries in time order past every one of those to find
another destination's read the whole backlog of the full ones: 50 ms a claim at 100,000 pending
on SQLite, several a second, and delivery slowed as the backlog grew. With this index the claim
first asks, one index seek a destination, whether any other destination has a delivery due
(app.core.delivery), and skips the claim when none has.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_deliveries_due_destination"


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(INDEX, ["status", "destination", "next_attempt_at"])


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
