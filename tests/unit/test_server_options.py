"""`batchgate serve` runs uvicorn on uvloop and httptools (issue 15), and both are installed."""

from __future__ import annotations

import importlib

from app.__main__ import server_options
from app.ground.config import Settings


def test_serve_uses_uvloop_and_httptools_by_default() -> None:
    options = server_options(Settings(_env_file=None, port=4321))  # type: ignore[call-arg]
    assert (options["loop"], options["http"], options["port"]) == ("uvloop", "httptools", 4321)
    for module in ("uvloop", "httptools"):  # an explicit choice must not fail at start
        importlib.import_module(module)


def test_the_pure_python_server_stays_available() -> None:
    settings = Settings(_env_file=None, server_loop="asyncio", server_http="h11")  # type: ignore[call-arg]
    assert (server_options(settings)["loop"], server_options(settings)["http"]) == ("asyncio", "h11")
