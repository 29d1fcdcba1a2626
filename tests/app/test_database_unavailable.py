"""A database that refuses connections for now (too many clients, starting up, gone) is
"unavailable", to be tried again, not a refusal of the work (issue 13 item 10). The RabbitMQ
intake asks `is_unavailable` to requeue a valid message instead of dead-lettering it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from sqlalchemy import text

from app.db.session import Database, is_unavailable
from testkit import PG_ADMIN_DSN, PG_HOST, PG_PORT, postgres_database
from testkit.standins.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


async def connect_error(url: str) -> BaseException:
    db = Database(url)
    try:
        async with db.transaction() as session:
            await session.execute(text("select 1"))
    except Exception as exc:
        return exc
    finally:
        await db.dispose()
    raise AssertionError("the connection was expected to fail")


async def test_too_many_clients_at_connect_time_is_unavailable() -> None:
    role = f"bg_test_full_{uuid.uuid4().hex[:8]}"
    async with postgres_database():  # skips (or fails in CI) without PostgreSQL
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
            error = await connect_error(f"postgresql+asyncpg://{role}@{PG_HOST}:{PG_PORT}/postgres")
        finally:
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
            await admin.close()
    assert "too many connections" in str(error)
    assert is_unavailable(error)


async def test_a_server_that_is_gone_is_unavailable_and_a_bad_statement_is_not() -> None:
    async with postgres_database() as url, TcpProxy(PG_HOST, PG_PORT) as proxy:
        await proxy.pause()
        proxied = url.replace(f"@{PG_HOST}:{PG_PORT}/", f"@127.0.0.1:{proxy.port}/")
        assert is_unavailable(await connect_error(proxied))
        db = Database(url)
        try:
            async with db.transaction() as session:
                await session.execute(text("select no_such_column"))
        except Exception as exc:
            assert not is_unavailable(exc)
        finally:
            await db.dispose()
