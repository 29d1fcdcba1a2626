"""Database lifecycle: SQLite files, uniquely named PostgreSQL databases, migrations, and whether a
service the suite needs is there (skipped on a laptop without it, required under CI=true)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from app.db.migrate import upgrade

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = 5432
PG_ADMIN_DSN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(name: str, reachable: bool) -> None:
    """Skip when a service is absent on a laptop; fail in CI, where it is required."""
    if reachable:
        return
    message = f"{name} is not reachable"
    if IN_CI:
        pytest.fail(f"{message}, and CI=true makes it required")
    pytest.skip(message)


async def postgres_reachable() -> bool:
    try:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


def sqlite_url(directory: Path, name: str = "batchgate.db") -> str:
    """The URL of a SQLite file in `directory` (created on first use)."""
    return f"sqlite+aiosqlite:///{directory / name}"


def postgres_url(name: str, host: str = PG_HOST, port: int = PG_PORT) -> str:
    """The URL of database `name`; `port` may be a proxy's (see testkit/standins/tcp_proxy.py)."""
    return f"postgresql+asyncpg://postgres@{host}:{port}/{name}"


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def migrate(url: str) -> str:
    """Run every migration on `url`; returns it."""
    await asyncio.to_thread(upgrade, url)
    return url


@asynccontextmanager
async def fresh_postgres(prefix: str = "bg_test", template: str | None = None) -> AsyncIterator[str]:
    """A new, uniquely named PostgreSQL database, empty or a copy of `template` (a database
    nobody is connected to), dropped afterwards (no skip: see postgres_database for tests)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        await admin.close()
    try:
        yield postgres_url(name)
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A new, uniquely named PostgreSQL database, dropped afterwards; skipped (failed under CI)
    when PostgreSQL is not there."""
    require_service(f"PostgreSQL on {PG_HOST}:{PG_PORT}", await postgres_reachable())
    async with fresh_postgres() as url:
        yield url


class Migrated:
    """Migrated databases copied for each test from a template migrated once per test process:
    running every migration for each test (0.7 s on SQLite, 0.3 s on PostgreSQL, more under
    load) was about a fifth of the suite's time. The migrations' own tests migrate for real."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sqlite: Path | None = None
        self._postgres: str | None = None

    async def sqlite(self, directory: Path) -> str:
        """A migrated SQLite file in `directory`; its URL."""
        if self._sqlite is None:
            template = self.directory / "template.db"
            await migrate(sqlite_url(self.directory, template.name))
            self._sqlite = template
        # The backup API copies a consistent database whatever its journal holds.
        with sqlite3.connect(self._sqlite) as source, sqlite3.connect(directory / "batchgate.db") as copy:
            source.backup(copy)
        source.close()
        copy.close()
        return sqlite_url(directory)

    @asynccontextmanager
    async def postgres(self) -> AsyncIterator[str]:
        """A migrated PostgreSQL database of its own, dropped afterwards (skipped without the
        server, failed under CI)."""
        require_service(f"PostgreSQL on {PG_HOST}:{PG_PORT}", await postgres_reachable())
        if self._postgres is None:
            name = f"bg_template_{uuid.uuid4().hex[:12]}"
            admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            self._postgres = name
            await migrate(postgres_url(name))
        async with fresh_postgres(template=self._postgres) as url:
            yield url

    async def drop(self) -> None:
        """Drop the PostgreSQL template, if one was made."""
        if self._postgres is None:
            return
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self._postgres}" WITH (FORCE)')
        finally:
            await admin.close()
