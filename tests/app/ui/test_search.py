"""The requests list's search and filters, and the dashboard's numbers, against what they must
return: rows written straight into both databases, compared with Python's own answer."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import asyncpg
import pytest
from alembic import command
from sqlalchemy import text

from app.core.read import pages, queries, stats
from app.core.read.search import after_prefix
from app.core.rules.owners import ADMIN
from app.db.migrate import alembic_config
from app.db.models import Delivery, Request
from app.db.session import Database
from app.ground.clock import utcnow
from testkit import migrate, postgres_database
from testkit.databases import PG_ADMIN_DSN, Migrated

MAX = "\U0010ffff"
IDS = [
    "a", "ab", "abc", "a%b", "a_b", "axb", "a\\b", "A%b", "ABC", "ä1", "äb", "a\u00ff", "a\u0100",
    "\ud7ff-x", "\ue000", "z" + MAX, "z" + MAX + MAX, "z" + MAX + "a", MAX, MAX + "q", "{", "b",
    "cust-000123",
]  # fmt: skip
PREFIXES = [
    "a",
    "a%",
    "a_",
    "a\\",
    "A",
    "ab",
    "ä",
    "a\u00ff",
    "\ud7ff",
    "z",
    "z" + MAX,
    MAX,
    "c",
    "nothing",
    "%",
    "_",
]
NEEDLES = ["%", "_", "\\", "b", "B", "ä", MAX, "000", "x"]


def test_after_prefix() -> None:
    assert after_prefix("cust-0004") == "cust-0005"
    assert after_prefix("a" + MAX) == "b"
    assert after_prefix("a" + MAX + MAX) == "b"
    assert after_prefix(MAX) is None
    assert after_prefix("\ud7ff") == "\ue000"  # surrogates are skipped: UTF-8 cannot hold them


async def write(db: Database, custom_ids: list[str], deliveries: dict[str, list[str]] | None = None) -> None:
    now = utcnow()
    async with db.transaction() as session:
        rows = [
            Request(
                custom_id=c, origin="api", backend="local", endpoint="/v1/chat/completions",
                model="m1" if i % 2 else "m2", body={}, body_bytes=2, status="pending", created_at=now,
            )
            for i, c in enumerate(custom_ids)
        ]  # fmt: skip
        session.add_all(rows)
        await session.flush()
        for row in rows:
            for status in (deliveries or {}).get(row.custom_id, []):
                session.add(
                    Delivery(request_id=row.id, channel="webhook", target={}, status=status, created_at=now)
                )


async def every_page(db: Database, query: queries.RequestQuery) -> list[str]:
    """custom_ids of every page, following the next cursors; the way back must agree."""
    page = await queries.request_page(db, query, ADMIN)
    seen = [r.request.custom_id for r in page.rows]
    while page.next_cursor:
        page = await queries.request_page(db, replace(query, after=page.next_cursor), ADMIN)
        seen += [r.request.custom_id for r in page.rows]
    back = [r.request.custom_id for r in page.rows]
    while page.prev_cursor:
        page = await queries.request_page(db, replace(query, before=page.prev_cursor), ADMIN)
        back = [r.request.custom_id for r in page.rows] + back
    assert back == seen
    return seen


async def test_search_matches_exactly_what_python_matches(db: Database) -> None:
    await write(db, IDS)
    newest_first = IDS[::-1]
    for prefix in PREFIXES:
        query = queries.RequestQuery(search=prefix, match="prefix", size=10)
        assert await every_page(db, query) == [c for c in newest_first if c.startswith(prefix)], prefix
        oldest = await every_page(db, replace(query, sort="oldest"))
        assert oldest == [c for c in IDS if c.startswith(prefix)], prefix
    for needle in NEEDLES:
        query = queries.RequestQuery(search=needle, match="contains", size=10)
        assert await every_page(db, query) == [c for c in newest_first if needle in c], needle


async def test_scattered_pages_probe_then_read_the_index(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small limits, so a few rows take every path: capped total, probe found, probe too short.
    monkeypatch.setattr(pages, "COUNT_CAP", 4)
    monkeypatch.setattr(pages, "PROBE_ROWS", 6)
    ids = [f"old-{i:03d}" for i in range(30)] + [
        f"mix-{i:03d}" if i % 3 else f"new-{i:03d}" for i in range(40)
    ]
    await write(db, ids)
    for prefix in ("old-", "new-", "mix-", "o", "n", "old-01", "zzz"):
        for sort, ordered in (("newest", ids[::-1]), ("oldest", ids)):
            for size in (10, 25):
                query = queries.RequestQuery(search=prefix, sort=sort, size=size)
                assert await every_page(db, query) == [c for c in ordered if c.startswith(prefix)]
        page = await queries.request_page(db, queries.RequestQuery(search=prefix), ADMIN)
        matches = sum(c.startswith(prefix) for c in ids)
        assert (page.total, page.total_capped) == (min(matches, 4), matches > 4)


async def test_delivery_status_filter(db: Database) -> None:
    ids = [f"r{i}" for i in range(12)]
    # Two deliveries for one request (two destinations), with the same status: listed once.
    deliveries = {
        "r1": ["delivery_failed"], "r2": ["delivered", "delivery_failed"],
        "r3": ["delivery_failed", "delivery_failed"],
        "r5": ["delivered"], "r8": ["retrying"], "r9": ["delivery_failed"],
    }  # fmt: skip
    await write(db, ids, deliveries)
    failed = [c for c in ids[::-1] if "delivery_failed" in deliveries.get(c, [])]
    assert failed == ["r9", "r3", "r2", "r1"]
    query = queries.RequestQuery(delivery_status="delivery_failed", size=10)
    assert await every_page(db, query) == failed
    assert (await queries.request_page(db, query, ADMIN)).total == 4
    # With another condition (EXISTS per row) the answer is the same set.
    assert await every_page(db, replace(query, search="r", match="prefix")) == failed
    assert await every_page(db, replace(query, model="m1")) == [c for c in failed if int(c[1:]) % 2]
    assert await every_page(db, replace(query, delivery_status="pending")) == []


async def test_dashboard_counts_and_marks_estimates(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    await write(db, [f"d{i}" for i in range(6)], {f"d{i}": ["delivered"] for i in range(5)})
    async with db.transaction() as session:
        await session.execute(text("UPDATE requests SET status = 'succeeded' WHERE custom_id <> 'd5'"))
    numbers = await stats.dashboard.__wrapped__(db)
    assert numbers.requests == {"pending": 1, "succeeded": 5}
    assert numbers.deliveries == {"delivered": 5}
    assert numbers.estimated == frozenset() and numbers.in_flight == 1
    assert sum(numbers.per_minute) == 6 and numbers.per_minute[-1] in (0, 6)
    monkeypatch.setattr(stats, "EXACT_UP_TO", 3)
    numbers = await stats.dashboard.__wrapped__(db)
    assert numbers.requests["pending"] == 1  # in flight: always counted
    if db.is_postgres:
        assert numbers.estimated == {("requests", "succeeded"), ("deliveries", "delivered")}
        assert numbers.success_rate_estimated
        assert numbers.requests["succeeded"] >= 4  # at least the cap + 1, else the estimate
    else:  # no statistics to estimate from: counted
        assert numbers.estimated == frozenset() and numbers.requests["succeeded"] == 5
    assert await stats.exact_counts.__wrapped__(db) == {
        "batches": {},
        "requests": {"pending": 1, "succeeded": 5},
        "deliveries": {"delivered": 5},
    }


@pytest.mark.postgres
async def test_migration_without_the_privilege_to_create_pg_trgm() -> None:
    """A role that may not create extensions: migration 0009 skips the trigram index, goes down
    and up again, and the contains search still answers (by a scan)."""
    role = f"bg_noext_{uuid.uuid4().hex[:8]}"
    async with postgres_database() as url:
        name = url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}")
        try:
            await admin.execute(f"CREATE ROLE {role} LOGIN")
            await admin.execute(f"GRANT ALL ON SCHEMA public TO {role}")
            role_url = url.replace("postgres@", f"{role}@")
            try:
                await migrate(role_url)
                assert not await admin.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
                indexes = {r["indexname"] for r in await admin.fetch("SELECT indexname FROM pg_indexes")}
                assert "ix_requests_custom_id" in indexes and "ix_requests_custom_id_trgm" not in indexes
                db = Database(role_url)
                try:
                    await write(db, ["x-123-y", "x-124", "123"])
                    query = queries.RequestQuery(search="123", match="contains")
                    assert await every_page(db, query) == ["123", "x-123-y"]
                finally:
                    await db.dispose()
                await asyncio.to_thread(command.downgrade, alembic_config(role_url), "0008")
                await migrate(role_url)
            finally:
                await admin.execute(f"DROP OWNED BY {role} CASCADE")
        finally:
            await admin.close()
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.execute(f"DROP ROLE {role}")
        finally:
            await admin.close()


@pytest.mark.postgres
async def test_migration_creates_the_trigram_index_when_it_can(migrated: Migrated) -> None:
    async with migrated.postgres() as url:
        db = Database(url)
        try:
            async with db.transaction() as session:
                names = set((await session.scalars(text("SELECT indexname FROM pg_indexes"))).all())
        finally:
            await db.dispose()
    assert {"ix_requests_custom_id", "ix_requests_custom_id_trgm", "ix_deliveries_status_request_id"} <= names
