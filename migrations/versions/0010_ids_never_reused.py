"""ids never reused: SQLite tables with AUTOINCREMENT, and a lease token on batches

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 03:30:00

- SQLite: every table with an integer id is rebuilt with AUTOINCREMENT, keeping its rows. Without
  it, deleting the newest batch freed its id and its requests' ids for the next batch, and an
  in-flight answer of the deleted batch was stored in the new one. The copy seeds SQLite's
  sequence with the highest id kept, so ids freed before this migration may be handed out once
  more; none freed after it ever is. PostgreSQL's identity columns never reuse ids: nothing to do.
- batches.lease_token: fresh at every claim, so a result is stored only by the run that holds
  the batch (app.core.results).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Parents before children does not matter here: migrations run with SQLite's foreign keys off, so
# dropping and renaming a table during the rebuild cascades nothing.
ID_TABLES = (
    "batches",
    "batch_events",
    "requests",
    "request_events",
    "deliveries",
    "delivery_attempts",
    "api_keys",
)


def upgrade() -> None:
    _rebuild_ids(autoincrement=True)
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_token", sa.String(length=32), nullable=True))


def downgrade() -> None:
    # The tables keep AUTOINCREMENT: the code of 0009 runs as well on them, and a downgrade must
    # not make ids reusable again (migrations/env.py keeps it through every rebuild).
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("lease_token")


def _rebuild_ids(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in ID_TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass
