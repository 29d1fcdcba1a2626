"""The UI behind keys (issue 14): login, session, logout, CSRF on every unsafe route, the Host check,
keys created and revoked in the UI, and the warning for a server open to the network."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy import select

from app.asgi import create_app
from app.db.models import ApiKey
from testkit import API_KEYS, RunningApp, StartApp, fast_settings, wait_until
from testkit.apps import every_route, with_csrf_token

KEY = API_KEYS[0]


async def test_login_keeps_a_session_until_logout(keyed: RunningApp) -> None:
    c = keyed.client
    first = await c.get("/batches")
    assert (first.status_code, first.headers["location"]) == (303, "/login?next=/batches")
    wrong = await c.post("/login", data={"key": "not-it", "next": "/batches"})
    assert wrong.status_code == 401 and "not valid" in wrong.text and "not-it" not in wrong.text
    right = await c.post("/login", data={"key": KEY, "next": "/batches"})
    assert (right.status_code, right.headers["location"]) == (303, "/batches")
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert KEY not in right.headers["set-cookie"]  # the session holds a digest, not the key
    assert (await c.get("/batches")).status_code == 200
    assert (await c.get("/api/batches")).status_code == 401  # a UI session opens no API route
    assert (await c.post("/logout")).headers["location"] == "/login"
    assert (await c.get("/batches")).status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
async def test_login_goes_back_only_to_this_site(keyed: RunningApp, target: str) -> None:
    answer = await keyed.client.post("/login", data={"key": KEY, "next": target})
    assert answer.headers["location"] == "/"


async def test_csrf_without_api_keys_and_from_a_stranger(sqlite_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        token = app.client.headers.pop("x-csrftoken")
        # A cross-site form: the browser sends the cookie but the page cannot know the token.
        forged = await app.client.post("/settings/reset", headers={"HX-Request": "true"})
        assert forged.status_code == 403 and "CSRF" in forged.text
        forged_form = await app.client.post("/keys", data={"name": "attacker"})
        assert forged_form.status_code == 403
        stranger = httpx.AsyncClient(base_url=app.url)  # no cookie at all, a token of its own
        async with stranger:
            answer = await stranger.post("/settings/reset", headers={"x-csrftoken": token})
            assert answer.status_code == 403
        async with app.db.transaction() as session:
            assert (await session.scalars(select(ApiKey))).all() == []
        ok = await app.client.post("/settings/reset", headers={"HX-Request": "true", "x-csrftoken": token})
        assert ok.status_code == 200
        # The API is not a cookie face: it needs no token.
        assert (await app.client.get("/api/batches")).status_code == 200


UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Not the UI: machine routes that take a key in a header (the API and both drop-in faces under
# /api and /v1) and the open ones that change nothing.
NOT_UI = ("/api", "/v1", "/health", "/metrics", "/static")


def unsafe_ui_routes(app: RunningApp) -> list[tuple[str, str]]:
    """Every (method, path) of the UI that changes something, from the app's own routes."""
    routes = every_route(create_app(app.settings))
    return [
        (m, p) for m, p in routes if m in UNSAFE and not any(p == u or p.startswith(u + "/") for u in NOT_UI)
    ]


async def test_every_unsafe_ui_route_refuses_a_request_without_the_csrf_token(keyed: RunningApp) -> None:
    """Listed from the app, so a new action is covered the day it is added. Each is refused with
    CSRF's 403 (dummy ids: the token is checked before the route looks anything up) while the
    session is valid, and the same request with the token is not."""
    c = keyed.client
    assert (await c.post("/login", data={"key": KEY, "next": "/"})).status_code == 303
    routes = unsafe_ui_routes(keyed)
    paths = {p for _, p in routes}
    assert paths >= {"/keys", "/keys/1/revoke", "/batches/1/cancel", "/settings/reset", "/logout"}, paths
    # Logging out ends the session the other checks need: last.
    routes.sort(key=lambda route: route[1] == "/logout")
    token = c.headers.pop("x-csrftoken")  # the cookie stays, as a cross-site form sends it
    for method, path in routes:
        forged = await c.request(method, path, data={"name": "attacker"})
        assert (forged.status_code, "CSRF" in forged.text) == (403, True), (method, path, forged.text)
        assert (await c.get("/batches")).status_code == 200, "the session ended: a refusal of another kind"
        sent = await c.request(method, path, data={"name": "key"}, headers={"x-csrftoken": token})
        assert not (sent.status_code == 403 and "CSRF" in sent.text), (method, path, sent.text)
    async with keyed.db.transaction() as session:
        assert "attacker" not in [key.name for key in (await session.scalars(select(ApiKey))).all()]


@pytest.mark.parametrize(
    ("host", "allowed", "answered", "refused"),
    [
        (
            "127.0.0.1",
            "",
            ["127.0.0.1:4000", "localhost", "[::1]:4000"],
            ["evil.example", "evil.example:4000"],
        ),
        (
            "0.0.0.0",
            "gw.example.com,*.internal",
            ["gw.example.com:443", "a.b.internal"],
            ["127.0.0.1", "x.com"],
        ),
        ("0.0.0.0", "", ["anything.example"], []),
    ],
)
async def test_the_host_header_is_checked(
    sqlite_url: str, start_app: StartApp, host: str, allowed: str, answered: list[str], refused: list[str]
) -> None:
    settings = fast_settings(sqlite_url, scheduler_enabled=False, host=host, allowed_hosts=allowed)
    async with start_app(settings) as app:
        for name in answered:
            for path in ("/api/batches", "/batches", "/health"):
                assert (await app.client.get(path, headers={"host": name})).status_code == 200, (name, path)
        for name in refused:
            for path in ("/api/batches", "/batches", "/health"):
                answer = await app.client.get(path, headers={"host": name})
                assert answer.status_code == 400 and "ALLOWED_HOSTS" in answer.text, (name, path)


async def test_a_key_created_in_the_ui_closes_the_api_and_revoking_it_ends_it(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        c = app.client
        assert (await c.get("/api/batches")).status_code == 200  # no key yet: open
        assert (await c.post("/keys", data={"name": " "})).status_code == 422
        created = await c.post("/keys", data={"name": "billing"})
        assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
        key = created.text.split('id="new-key-value">')[1].split("<")[0]
        assert key.startswith("bg_") and len(key) > 40
        assert (await c.get("/keys")).status_code == 200  # its creator stays logged in with it
        assert key not in (await c.get("/keys")).text  # shown once
        assert (await c.get("/api/batches")).status_code == 401
        assert (await c.get("/api/batches", headers={"authorization": f"Bearer {key}"})).status_code == 200

        async def last_used() -> bool:
            async with app.db.transaction() as session:
                return (
                    await session.scalar(select(ApiKey.last_used_at).where(ApiKey.name == "billing"))
                    is not None
                )

        await wait_until(last_used, timeout=15, what="the key's last use written")
        async with app.db.transaction() as session:
            key_id = await session.scalar(select(ApiKey.id).where(ApiKey.name == "billing"))
        revoked = await c.post(f"/keys/{key_id}/revoke", headers={"HX-Request": "true"})
        assert revoked.status_code == 200
        assert (
            await c.get("/api/batches", headers={"x-api-key": key})
        ).status_code == 200  # no key left: open
        await c.post("/keys", data={"name": "second"})  # a key again: the revoked one stays refused
        assert (await c.get("/api/batches", headers={"x-api-key": key})).status_code == 401


async def test_a_server_open_to_the_network_says_so(
    sqlite_url: str, start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.asgi"):
        async with start_app(fast_settings(sqlite_url, scheduler_enabled=False, host="0.0.0.0")) as app:
            assert 'id="open-warning"' in (await app.client.get("/")).text
    assert any("NO API KEY" in r.getMessage() for r in caplog.records)
    caplog.clear()
    settings = fast_settings(sqlite_url, scheduler_enabled=False, host="0.0.0.0", api_keys=KEY)
    with caplog.at_level(logging.WARNING, logger="app.asgi"):
        async with start_app(settings) as app:
            await app.client.post("/login", data={"key": KEY})
            assert 'id="open-warning"' not in (await app.client.get("/")).text
    assert not any("NO API KEY" in r.getMessage() for r in caplog.records)


async def test_revoking_a_key_ends_the_sessions_logged_in_with_it(keyed: RunningApp) -> None:
    admin = keyed.client
    await admin.post("/login", data={"key": KEY})
    created = await admin.post("/keys", data={"name": "colleague"})
    key = created.text.split('id="new-key-value">')[1].split("<")[0]
    async with httpx.AsyncClient(base_url=keyed.url) as colleague:
        await with_csrf_token(colleague)
        assert (await colleague.post("/login", data={"key": key})).status_code == 303
        assert (await colleague.get("/batches")).status_code == 200
        async with keyed.db.transaction() as session:
            key_id = await session.scalar(select(ApiKey.id).where(ApiKey.name == "colleague"))
        assert (await admin.post(f"/keys/{key_id}/revoke")).status_code == 303
        assert (await colleague.get("/batches")).status_code == 303  # its session ended
        assert (await admin.get("/batches")).status_code == 200  # the other key's did not


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
async def test_a_malformed_host_port_is_a_400_not_a_500(
    sqlite_url: str, start_app: StartApp, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Litestar parses the Host header's port when the UI's session and CSRF middleware build the
    # URL, before any route runs: a port that is no port answered 500 with a traceback (issue 29).
    settings = fast_settings(sqlite_url, scheduler_enabled=False, host=host)
    async with start_app(settings) as app:
        for name in ("localhost:abc", "127.0.0.1:99999999", "[::1]:x", "localhost:-1", "localhost:1e3"):
            for path in ("/", "/batches", "/login", "/api/batches", "/health", "/v1/batches"):
                answer = await app.client.get(path, headers={"host": name})
                assert answer.status_code == 400, (name, path, answer.status_code)
                assert "Bad Host header" in answer.text, (name, path)
        assert (await app.client.get("/health", headers={"host": "localhost:4000"})).status_code == 200
    # asyncio's "Task exception was never retrieved" of a task left by another test (an HTTP
    # client's aclose on a loop already closed) is collected whenever the GC runs: not this app's.
    assert not [r for r in caplog.records if r.exc_info and r.name != "asyncio"], "no traceback logged"
