"""ui at 1M requests: indexes for the custom_id search, the delivery-status and model filters

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 09:00:00

- requests (custom_id, id): the prefix search reads a custom_id range (app.core.read.search). On
  PostgreSQL with varchar_pattern_ops, so the range compares bytes whatever the collation is.
- requests (model, id): the model filter walks it newest first.
- deliveries (status, request_id): the delivery-status filter reads the ids of one status.
- PostgreSQL only: requests (custom_id, id) in the database's collation, for the list sorted by
  custom_id (a varchar_pattern_ops index cannot serve that ORDER BY; SQLite's index above can).
- PostgreSQL only, when possible: the pg_trgm extension and a GIN trigram index for the contains
  search. Creating an extension needs a privilege the app's role may lack; then the migration
  skips both and the search still answers correctly, by a scan (docs/operations.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGRAM_INDEX = "ix_requests_custom_id_trgm"
SORT_INDEX = "ix_requests_custom_id_sort"


def upgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_requests_custom_id", ["custom_id", "id"], postgresql_ops={"custom_id": "varchar_pattern_ops"}
        )
        batch_op.create_index("ix_requests_model_id", ["model", "id"])
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_status_request_id", ["status", "request_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX {SORT_INDEX} ON requests (custom_id, id)")
        if _trigram_available():
            op.execute(f"CREATE INDEX {TRIGRAM_INDEX} ON requests USING gin (custom_id gin_trgm_ops)")


def downgrade() -> None:
    # The extension stays: other databases objects may use it, and dropping it needs privilege.
    op.execute(f"DROP INDEX IF EXISTS {TRIGRAM_INDEX}")
    op.execute(f"DROP INDEX IF EXISTS {SORT_INDEX}")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_status_request_id")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index("ix_requests_model_id")
        batch_op.drop_index("ix_requests_custom_id")


def _trigram_available() -> bool:
    """pg_trgm is installed, or can be: create it inside a savepoint, so that lacking the
    privilege (or the contrib package) does not abort the migration's transaction."""
    bind = op.get_bind()
    if bind.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")):
        return True
    if not bind.scalar(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")):
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError:
        return False
    return True
