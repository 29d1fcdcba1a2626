"""delivery destinations: the webhook origin or RabbitMQ queue/exchange of each delivery

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 23:40:00

Sends are limited per destination (issue 28): a receiver that hangs holds only its own share of
the delivery slots. The claim leaves out the destinations at their limit by this column; existing
rows get theirs from their target.
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.net.destinations import destination_of

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 5000


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("destination", sa.String(length=300), nullable=False, server_default=""))
    deliveries = sa.table(
        "deliveries", sa.column("id", sa.Integer), sa.column("target"), sa.column("destination", sa.String)
    )
    connection = op.get_bind()
    last = 0
    while rows := connection.execute(
        sa.select(deliveries.c.id, deliveries.c.target)
        .where(deliveries.c.id > last)
        .order_by(deliveries.c.id)
        .limit(CHUNK)
    ).all():
        last = rows[-1].id
        connection.execute(
            sa.update(deliveries)
            .where(deliveries.c.id == sa.bindparam("row_id"))
            .values(destination=sa.bindparam("key")),
            [{"row_id": row.id, "key": destination_of(_target(row.target))} for row in rows],
        )


def _target(value: object) -> dict[str, object]:
    target = json.loads(value) if isinstance(value, str) else value
    return target if isinstance(target, dict) else {}


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("destination")
