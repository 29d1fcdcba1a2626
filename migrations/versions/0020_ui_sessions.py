"""ui_sessions: UI logins kept on the server

Revision ID: 0020
Revises: 0017
Create Date: 2026-12-07 03:30:00

Issue 29 part 2: logging out did not end a session (the cookie held everything, so a copied cookie
opened the UI for 7 days). The cookie now carries a random token; its row here says whether the
login was ended by logout or key revocation, or has expired.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0020"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("key_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("last_seen_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("ended_at", DateTimeUTC(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ui_sessions")),
    )
    op.create_index("ix_ui_sessions_key_digest", "ui_sessions", ["key_digest"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ui_sessions_key_digest", table_name="ui_sessions")
    op.drop_table("ui_sessions")
