"""Intake throughput over HTTP against its limits, measured in one run.

    .venv/bin/python -m bench.intake [--db sqlite|postgres] [--requests N] [--concurrency C]

Limits: (1) the same number of single-row INSERTs, each in its own transaction, through the same
Database engine at the same concurrency; (2) a trivial ASGI app answering 202 {} served and hit the
same way (the HTTP stack's ceiling). Client, server and driver share this process's event loop.
Each round measures all three, so load from elsewhere on the machine hits them alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import insert

from app.asgi import create_app
from app.db.models import Request
from bench.common import (
    clients,
    fresh_database,
    hammer,
    parse_args,
    print_table,
    rate,
    ratio,
    raw_database,
    request_row,
)
from testkit import fast_settings
from testkit.builders import client_request
from testkit.standins.asgi import Receive, Scope, Send, lifespan, read_body, send_json
from testkit.standins.serve import serve

HOOK = "http://127.0.0.1:9/hook"  # never called: the scheduler is off
WARM_UP = 200


async def ceiling_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the body and answers 202 {}: all an HTTP endpoint must do, minus the work."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    await read_body(receive)
    await send_json(send, 202, {})


async def http_rate(app: Any, prefix: str, n: int, c: int, timeout: float) -> float:  # noqa: ASYNC109
    """POST n requests to app's /api/requests from c clients (after a warm-up); requests/s."""
    async with serve(app) as url, clients(url, c) as pool:

        async def post(w: int, i: int, tag: str = "") -> None:
            response = await pool[w].post("/api/requests", json=client_request(f"{prefix}{tag}-{i}", HOOK))
            if response.status_code != 202:
                raise RuntimeError(f"{prefix}: {response.status_code} {response.text[:200]}")

        await hammer(min(WARM_UP, n), c, lambda w, i: post(w, i, "warm"), timeout)
        return n / await hammer(n, c, post, timeout)


async def insert_rate(url: str, prefix: str, n: int, c: int, timeout: float) -> float:  # noqa: ASYNC109
    """n single-row INSERTs of an intake-shaped row, each in its own transaction; rows/s.

    A plain Core INSERT ... RETURNING id, built once so its compiled form is cached: the least
    SQLAlchemy can do. With unique custom_ids the database does the same work as intake's
    INSERT ... ON CONFLICT DO NOTHING RETURNING id.
    """
    db = raw_database(url)
    stmt = insert(Request.__table__).returning(Request.__table__.c.id)

    async def one(_w: int, i: int, tag: str = "") -> None:
        row = request_row(client_request(f"{prefix}{tag}-{i}", HOOK))
        async with db.engine.begin() as connection:
            await connection.execute(stmt, row)

    try:
        await hammer(min(WARM_UP, n), c, lambda w, i: one(w, i, "warm"), timeout)
        return n / await hammer(n, c, one, timeout)
    finally:
        await db.dispose()


async def main(kind: str, n: int, c: int, rounds: int, timeout: float) -> None:  # noqa: ASYNC109
    raw: list[float] = []
    ceiling: list[float] = []
    intake: list[float] = []
    async with fresh_database(kind) as url:
        settings = fast_settings(url, scheduler_enabled=False)
        for r in range(rounds):
            raw.append(await insert_rate(url, f"raw{r}", n, c, timeout))
            ceiling.append(await http_rate(ceiling_app, f"ceiling{r}", n, c, timeout))
            intake.append(await http_rate(create_app(settings), f"api{r}", n, c, timeout))
    print_table(
        f"bench.intake  db={kind}  requests={n}  concurrency={c}  rounds={rounds} (medians; ratio range)",
        [
            ("raw INSERT, 1 row/transaction", rate(raw)),
            ("HTTP ceiling (trivial ASGI app)", rate(ceiling)),
            ("intake POST /api/requests", rate(intake)),
            ("intake / raw INSERT", ratio(intake, raw)),
            ("intake / HTTP ceiling", ratio(intake, ceiling)),
        ],
    )


if __name__ == "__main__":
    args = parse_args("python -m bench.intake", __doc__.split("\n")[0])
    asyncio.run(main(args.db, args.requests, args.concurrency, args.rounds, args.timeout))
