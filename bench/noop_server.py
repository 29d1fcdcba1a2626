"""The limit of bench.http_intake: the framework's own no-op route, served as `batchgate serve` is.

    HOST=127.0.0.1 PORT=8001 .venv/bin/python -m bench.noop_server

A bare Litestar app whose `POST /noop` decodes the same JSON body as intake (Litestar's msgspec
decoding into `data: dict`) and answers 202 `{}`. It runs under uvicorn with the options of
`batchgate serve` (app.__main__.server_options, from the same environment: HOST, PORT,
LOG_LEVEL, SERVER_LOOP, SERVER_HTTP), so the app and its limit differ only in the app.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from litestar import Litestar, get, post
from litestar.status_codes import HTTP_202_ACCEPTED

from app.__main__ import server_options
from app.ground import logs
from app.ground.config import Settings


@post("/noop", status_code=HTTP_202_ACCEPTED)
async def noop(data: dict[str, Any]) -> dict[str, Any]:
    """Everything an intake endpoint must do, minus the work: decode the body, answer."""
    return {}


@get("/health")
async def health() -> dict[str, Any]:
    """What the benchmark waits for before loading the server (as for the app)."""
    return {}


def main() -> None:
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)  # as `batchgate serve` does
    uvicorn.run(Litestar([noop, health]), **server_options(settings))


if __name__ == "__main__":
    main()
