"""Alembic environment: async engine, URL from the caller (app.db.migrate) or Settings."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import Table, event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.models import Batch
from app.db.session import SQLITE_AUTO_VACUUM

target_metadata = Batch.metadata


# Indexes a migration creates on one database only (0009's custom_id sort index and 0022's due
# deliveries in time order on PostgreSQL) or only where it can (0009's trigram index needs
# pg_trgm): not in the models, so autogenerate and `alembic check` leave them alone.
OPTIONAL_INDEXES = frozenset(
    {"ix_requests_custom_id_trgm", "ix_requests_custom_id_sort", "ix_deliveries_due_at"}
)


def _include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    return not (type_ == "index" and name in OPTIONAL_INDEXES)


def _keep_autoincrement(table: Table, connection: Connection, **_: Any) -> None:
    """A table that batch mode rebuilds on SQLite keeps AUTOINCREMENT when the one it replaces has
    it. The rebuild copies the table from its reflection, which does not carry AUTOINCREMENT: the
    first migration to rebuild a table would let it hand out deleted ids again (issue 24)."""
    if connection.dialect.name != "sqlite" or not table.name.startswith("_alembic_tmp_"):
        return
    replaced = table.name.removeprefix("_alembic_tmp_")
    sql = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (replaced,)
    ).scalar()
    if sql and "AUTOINCREMENT" in sql.upper():
        table.dialect_options["sqlite"]["autoincrement"] = True


def _url() -> str:
    url = context.config.attributes.get("database_url")
    if url:
        return url
    from app.ground.config import Settings

    return Settings().database_url


def _run(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        # Before the first table: a new database reclaims purged space (see app.db.session).
        connection.exec_driver_sql(SQLITE_AUTO_VACUUM)
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=_include_object,
    )
    event.listen(Table, "before_create", _keep_autoincrement)
    try:
        with context.begin_transaction():
            context.run_migrations()
    finally:
        event.remove(Table, "before_create", _keep_autoincrement)


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
