"""The embedded model (issue 25): with LOCAL_BASE_URL unset the app runs llama.cpp's server itself,
restarts it when it dies, gives it up (and fails the waiting requests with why) when it cannot
run, and never leaves its process behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit import NO_DELIVERY, RunningApp, StartApp, chat, request_payload, wait_until
from testkit.processes import app_env, app_process
from testkit.realmodel import (
    MODEL,
    STARTUP_SECONDS,
    embedded_of,
    embedded_settings,
    health_of,
    process_gone,
    require_model,
    wait_ready,
)

pytestmark = pytest.mark.xdist_group("realmodel")  # one model server at a time on 2 cores


async def submit(app: RunningApp, custom_id: str, **body: Any) -> None:
    payload = request_payload(custom_id, NO_DELIVERY, model=MODEL, messages=chat("Count to ten."), **body)
    response = await app.client.post("/api/requests", json=payload)
    assert response.status_code == 202, response.text


async def statuses(app: RunningApp, custom_ids: list[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for custom_id in custom_ids:
        response = await app.client.get(f"/api/requests/{custom_id}")
        assert response.status_code == 200, response.text
        found[custom_id] = response.json()
    return found


async def test_a_killed_model_server_is_restarted_and_every_request_succeeds(
    sqlite_url: str, start_app: StartApp
) -> None:
    require_model()
    ids = [f"kill-{n}" for n in range(8)]
    async with start_app(embedded_settings(sqlite_url)) as app:
        server = embedded_of(app)
        await wait_ready(app)
        for custom_id in ids:
            await submit(app, custom_id, max_tokens=32)

        async def some_done() -> bool:
            found = await statuses(app, ids)
            return any(r["status"] == "succeeded" for r in found.values())

        await wait_until(some_done, timeout=STARTUP_SECONDS, interval=0.05, what="a first result")
        first_pid = server.pid
        assert first_pid is not None
        done_before = sum(r["status"] == "succeeded" for r in (await statuses(app, ids)).values())
        os.kill(first_pid, signal.SIGKILL)

        async def all_ended() -> bool:
            found = await statuses(app, ids)
            return all(r["status"] in ("succeeded", "failed") for r in found.values())

        await wait_until(all_ended, timeout=STARTUP_SECONDS, interval=0.2, what="every request ended")
        found = await statuses(app, ids)
        assert done_before < len(ids), "the batch ended before the kill: nothing was carried over"
        failed = {k: r["result"] for k, r in found.items() if r["status"] != "succeeded"}
        assert not failed, failed
        assert server.status().restarts >= 1 and server.pid not in (None, first_pid)
        assert process_gone(first_pid)
        second_pid = server.pid
        health = await wait_ready(app)
        assert health["embedded"]["restarts"] >= 1
    assert second_pid is not None and process_gone(second_pid), "the app left its model server running"


async def test_a_model_that_cannot_start_fails_the_requests_with_why(
    sqlite_url: str, start_app: StartApp, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model.gguf"
    # Lines would wait 300 s for an inference server that is down: a server given up ends them now.
    async with start_app(embedded_settings(sqlite_url, embedded_model_path=str(missing))) as app:
        await submit(app, "cannot-start")

        async def failed() -> bool:
            found = await statuses(app, ["cannot-start"])
            return found["cannot-start"]["status"] == "failed"

        await wait_until(failed, timeout=30, interval=0.1, what="the request failed")
        result = (await statuses(app, ["cannot-start"]))["cannot-start"]["result"]
        assert result["error"]["code"] == "model_unavailable", result
        assert "the embedded model failed" in result["error"]["message"], result
        health = await health_of(app)
        assert health["embedded"]["state"] == "failed", health
        # Without llama.cpp installed the reason is that instead; either way it says why.
        why = health["embedded"]["detail"]
        assert str(missing) in why or "not installed" in why, health
        assert not health["backends"][0]["reachable"] and why in health["backends"][0]["detail"]


async def test_a_model_server_that_keeps_dying_is_given_up_after_its_restarts(
    sqlite_url: str, start_app: StartApp, tmp_path: Path
) -> None:
    require_model()
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a model" * 100)
    settings = embedded_settings(
        sqlite_url,
        embedded_model_path=str(garbage),
        embedded_max_restarts=2,
        embedded_restart_backoff_seconds=0.05,
    )
    async with start_app(settings) as app:
        await submit(app, "keeps-dying")
        server = embedded_of(app)

        async def given_up() -> bool:
            return server.status().state == "failed"

        await wait_until(given_up, timeout=STARTUP_SECONDS, interval=0.1, what=lambda: str(server.status()))
        status = server.status()
        assert status.restarts == 2 and "gave up after 3 starts" in status.detail, status
        assert "exited with code" in status.detail, status

        async def failed() -> bool:
            return (await statuses(app, ["keeps-dying"]))["keeps-dying"]["status"] == "failed"

        await wait_until(failed, timeout=60, interval=0.1, what="the request failed")
        error = (await statuses(app, ["keeps-dying"]))["keeps-dying"]["result"]["error"]
        assert error["code"] == "model_unavailable" and "gave up" in error["message"], error


async def test_an_api_process_starts_no_model(sqlite_url: str, start_app: StartApp) -> None:
    async with start_app(embedded_settings(sqlite_url, serve_role="api")) as app:
        health = await health_of(app)
        assert health["embedded"] is None and health["role"] == "api"
        assert app.worker is None


async def test_a_killed_batchgate_leaves_no_model_server(sqlite_url: str, tmp_path: Path) -> None:
    require_model()
    # LOCAL_BASE_URL empty is unset: the embedded model.
    env = app_env(sqlite_url, "", tmp_path, LOCAL_BASE_URL="")
    async with app_process(env) as (process, url):
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            health: dict[str, Any] = {}

            async def running() -> bool:
                nonlocal health
                health = (await client.get("/health")).json()
                # Ready, not only started: this app has PORT and HOST in its environment, which
                # llama_cpp.server would take as its own (it then bound Batchgate's port and died).
                assert (health.get("embedded") or {}).get("state") != "failed", health
                return (health.get("embedded") or {}).get("state") == "ready"

            await wait_until(running, timeout=STARTUP_SECONDS, interval=0.1, what=lambda: str(health))
        model_pid = health["embedded"]["pid"]
        process.send_signal(signal.SIGKILL)  # no lifespan shutdown: only the kernel can stop it
        await process.wait()
        await wait_until(lambda: process_gone(model_pid), timeout=10, what="the model server to end")
