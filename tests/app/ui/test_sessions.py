"""UI sessions that end (issue 29): logout and key revocation end a login on the server, so a copied
session cookie opens nothing afterwards, on this replica at once and on the others within seconds;
and the login form is throttled against guessing keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from app.core import ui_sessions
from app.core.rules.access import digest
from app.core.ui_sessions import UiSessions
from app.db.models import ApiKey, UiSession
from app.db.session import Database
from app.ground.clock import utcnow
from testkit import API_KEYS, RunningApp, StartApp, fast_settings, wait_until
from testkit.apps import with_csrf_token

KEY = API_KEYS[0]
SECRET = "one-secret-for-both-replicas"
WINDOW = 5  # LOGIN_THROTTLE_SECONDS in the throttle test: short, yet longer than 200 tries take


@asynccontextmanager
async def copy_of(app: RunningApp, cookies: httpx.Cookies) -> AsyncIterator[httpx.AsyncClient]:
    """Another browser (on `app`, maybe another replica) sending a copy of the session cookie."""
    stolen = "; ".join(f"{c.name}={c.value}" for c in cookies.jar if c.name.startswith("batchgate_session"))
    assert stolen, "the login set a session cookie"
    async with httpx.AsyncClient(base_url=app.url, headers={"cookie": stolen}) as client:
        yield client


async def test_a_copied_cookie_opens_nothing_after_logout(database_url: str, start_app: StartApp) -> None:
    settings = fast_settings(database_url, scheduler_enabled=False, api_keys=KEY, session_secret=SECRET)
    async with start_app(settings) as one, start_app(settings) as two:
        assert (await one.client.post("/login", data={"key": KEY})).status_code == 303
        async with copy_of(one, one.client.cookies) as here, copy_of(two, one.client.cookies) as there:
            assert (await here.get("/batches")).status_code == 200
            assert (await there.get("/batches")).status_code == 200  # the login holds on a replica
            assert (await one.client.post("/logout")).status_code == 303
            # The replica that logged out refuses the copy at once; the other within seconds.
            assert (await here.get("/batches")).status_code == 303
            assert (await one.client.get("/batches")).status_code == 303

            async def refused_there() -> bool:
                return (await there.get("/batches")).status_code == 303

            await wait_until(refused_there, timeout=ui_sessions.CACHE_SECONDS + 10, what="logout reaching B")
        async with one.db.transaction() as session:
            rows = (await session.scalars(select(UiSession))).all()
        assert [row.ended_at is not None for row in rows] == [True]
        assert KEY not in {row.id for row in rows} | {row.key_digest for row in rows}


async def test_revoking_a_key_ends_its_sessions_on_the_server(database_url: str, start_app: StartApp) -> None:
    settings = fast_settings(database_url, scheduler_enabled=False, api_keys=KEY, session_secret=SECRET)
    async with start_app(settings) as admin, httpx.AsyncClient(base_url=admin.url) as colleague:
        assert (await admin.client.post("/login", data={"key": KEY})).status_code == 303
        created = await admin.client.post("/keys", data={"name": "colleague"})
        key = created.text.split('id="new-key-value">')[1].split("<")[0]
        await with_csrf_token(colleague)
        assert (await colleague.post("/login", data={"key": key})).status_code == 303
        assert (await colleague.get("/batches")).status_code == 200
        async with admin.db.transaction() as session:
            key_id = await session.scalar(select(ApiKey.id).where(ApiKey.name == "colleague"))
        assert (await admin.client.post(f"/keys/{key_id}/revoke")).status_code == 303
        assert (await colleague.get("/batches")).status_code == 303
        assert (await admin.client.get("/batches")).status_code == 200
        async with admin.db.transaction() as session:
            ended = {
                row.key_digest: row.ended_at is not None for row in await session.scalars(select(UiSession))
            }
        assert ended == {digest(key): True, digest(KEY): False}


async def test_a_session_ends_when_idle_or_old(db: Database) -> None:
    """Each check reads the row afresh here (a new `UiSessions` is a replica that has not cached it)."""
    idle = timedelta(minutes=30)
    token = await UiSessions(idle).start(db, digest(KEY))
    assert await UiSessions(idle).key_of(db, token) == digest(KEY)
    assert await UiSessions(idle).key_of(db, "a-token-never-given") is None
    for column, age in ((UiSession.last_seen_at, idle), (UiSession.created_at, ui_sessions.LIFETIME)):
        async with db.transaction() as session:
            await session.execute(update(UiSession).values(last_seen_at=utcnow(), created_at=utcnow()))
        assert await UiSessions(idle).key_of(db, token) == digest(KEY)
        async with db.transaction() as session:
            await session.execute(update(UiSession).values({column: utcnow() - age - timedelta(seconds=1)}))
        assert await UiSessions(idle).key_of(db, token) is None, column
    # The next login clears the rows that can open nothing.
    await UiSessions(idle).start(db, digest(KEY))
    async with db.transaction() as session:
        assert len((await session.scalars(select(UiSession))).all()) == 1


async def test_guessing_keys_at_the_login_form_is_throttled(sqlite_url: str, start_app: StartApp) -> None:
    settings = fast_settings(
        sqlite_url,
        scheduler_enabled=False,
        api_keys=KEY,
        login_failures_per_client=10,
        login_throttle_seconds=WINDOW,
    )
    async with start_app(settings) as app:
        c = app.client
        began = time.monotonic()
        answers = await asyncio.gather(*(c.post("/login", data={"key": f"guess-{n}"}) for n in range(200)))
        windows = 1 + int((time.monotonic() - began) / WINDOW)  # 1 unless this machine is very slow
        codes = [a.status_code for a in answers]
        assert codes.count(401) + codes.count(429) == 200
        assert 10 <= codes.count(401) <= 10 * windows, codes
        refused = next(a for a in answers if a.status_code == 429)
        assert 1 <= int(refused.headers["retry-after"]) <= WINDOW
        assert "Too many wrong keys" in refused.text and 'id="login-error"' in refused.text
        # While throttled the right key is not even compared; after the window it works.
        assert (await c.post("/login", data={"key": KEY})).status_code == 429
        assert (await c.get("/api/batches", headers={"x-api-key": KEY})).status_code == 200  # API unaffected

        async def logged_in() -> bool:
            return (await c.post("/login", data={"key": KEY})).status_code == 303

        await wait_until(logged_in, timeout=15, interval=0.2, what="the right key accepted after the window")
        assert (await c.get("/batches")).status_code == 200
