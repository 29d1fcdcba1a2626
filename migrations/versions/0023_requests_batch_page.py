"""requests: a batch's requests in id order

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 16:10:00

A running batch reads its requests a page at a time in id order (the local backend's lines to
run, the OpenAI backend's input file): `batch_id = ? AND status = ? AND id > ? ORDER BY id
LIMIT n`. SQLite's ix_requests_batch_id held that order already (its rowid is the id).
PostgreSQL's held none, so it combined it with the status index, or sorted the rest of the
batch, for every page: at 1,000,000 requests processing a page took 210 ms (all 1,000,000
entries of the status index read) and the local backend ran 170 lines a second. The index is
now (batch_id, id) on both, and a page is one range of it.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_requests_batch_id"


def upgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
        batch_op.create_index(INDEX, ["batch_id", "id"])


def downgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
        batch_op.create_index(INDEX, ["batch_id"])
