"""What a stuck pipeline looks like from inside, for a test's failure message: rows by status
and lease, the steps that are running, and the local runs in flight. A test that times out
waiting on the pipeline says where the work stopped, so a rare failure can be read from CI's
log without reproducing it."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from app.db.session import Database

# (status, in a batch or leased, count) per table.
_TABLES = {
    table: f"SELECT status, {flag} IS NOT NULL, count(*) FROM {table} GROUP BY 1, 2 ORDER BY 1, 2"
    for table, flag in (("batches", "leased_by"), ("requests", "batch_id"), ("deliveries", "leased_by"))
}
_BATCH_ROWS = (
    "SELECT id, status, leased_by, leased_until, run_failures, request_count FROM batches"
    " WHERE status NOT IN ('done', 'cancelled', 'failed', 'expired') ORDER BY id"
)


async def describe(db: Database, worker: Any = None) -> str:
    """A few lines on where the pipeline's work is now (never raises: it serves a failure)."""
    lines: list[str] = []
    try:
        async with asyncio.timeout(10):
            async with db.transaction() as session:
                for table, query in _TABLES.items():
                    lines.append(f"{table}: {(await session.execute(text(query))).all()}")
                lines.append(f"open batches: {(await session.execute(text(_BATCH_ROWS))).all()}")
    except Exception as exc:  # the database may be the trouble
        lines.append(f"database unreadable: {exc!r}")
    if worker is not None:
        running = [name for name, step in worker.steps.items() if step.running]
        lines.append(f"steps running now: {running}")
        for runner in worker.line_runners:
            name, ending = runner.backend.name, sorted(runner.ending)
            lines.append(f"{name} runs in flight: {sorted(runner.tasks)}; ending: {ending}")
    return "\n".join(lines)
