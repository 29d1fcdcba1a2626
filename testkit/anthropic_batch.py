"""Driving the Anthropic runner against the stand-in Message Batches API without the app: rows
inserted as the batcher leaves them, the runner's steps called directly, states read back."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.backends.anthropic_batch import AnthropicBatchBackend
from app.core.rules.effective import EffectiveSettings
from app.core.runs.anthropic.runner import AnthropicRunner
from app.db.models import Batch, BatchEvent, Request
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.statuses import BatchStatus, RequestStatus
from app.net.outbound import RetryPolicy
from testkit.apps import fast_settings
from testkit.standins.anthropic_batch import AnthropicBatchStandin
from testkit.waiting import wait_until

BACKEND = "anthropic"
MODEL = "claude-haiku-4-5"
TERMINAL = {"done", "failed", "cancelled", "expired"}


@asynccontextmanager
async def runner(
    db: Database,
    database_url: str,
    api: AnthropicBatchStandin,
    *,
    key: str | None = "sk-ant-test",
    **settings: Any,
) -> AsyncIterator[AnthropicRunner]:
    """A runner on a backend pointed at the stand-in, with short polls and retries; the settings
    name it in a backends file (kind anthropic-batch), as the app's would."""
    url: str = api.url  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as folder:
        backends = Path(folder) / "backends.toml"
        backends.write_text(
            f'[backends.{BACKEND}]\nkind = "anthropic-batch"\nbase_url = "{url}"\nmodels = ["claude-*"]\n'
        )
        values = {
            "backends_file": str(backends),
            "anthropic_poll_seconds": 0.01,
            "anthropic_auth_recheck_seconds": 0.05,
            **settings,
        }
        effective = EffectiveSettings(db, fast_settings(database_url, **values))
    await effective.refresh()
    backend = AnthropicBatchBackend(BACKEND, key, url, timeout_seconds=5, retries=RetryPolicy(2, 0.01))
    try:
        yield AnthropicRunner(db, effective, backend, "worker-1")
    finally:
        await backend.close()


async def ready_batch(
    db: Database, *texts: str, endpoint: str = "/v1/messages", scope: str = "", backend: str = BACKEND
) -> int:
    """A ready batch of this backend with one batched request per text (custom_id = text)."""
    now = utcnow()
    async with db.transaction() as session:
        batch = Batch(
            backend=backend,
            endpoint=endpoint,
            model=MODEL,
            origin="api",
            status=BatchStatus.READY,
            request_count=len(texts),
            bytes=0,
            created_at=now,
            status_changed_at=now,
            ready_at=now,
        )
        session.add(batch)
        await session.flush()
        for text in texts:
            messages = [{"role": "user", "content": text}]
            body: dict[str, Any] = {"model": MODEL, "messages": messages, "max_tokens": 16}
            session.add(
                Request(
                    custom_id=text,
                    scope=scope,
                    origin="api",
                    backend=backend,
                    endpoint=endpoint,
                    model=MODEL,
                    body=body,
                    body_bytes=len(text),
                    delivery={"type": "none"},
                    status=RequestStatus.BATCHED,
                    batch_id=batch.id,
                    created_at=now,
                )
            )
        return batch.id


async def batch_row(db: Database, batch_id: int) -> Batch:
    async with db.transaction() as session:
        batch = await session.get(Batch, batch_id)
        assert batch is not None
        session.expunge(batch)
        return batch


async def requests_of(db: Database, batch_id: int | None = None) -> dict[str, Request]:
    """Every request (of the batch), by custom_id."""
    async with db.transaction() as session:
        query = select(Request) if batch_id is None else select(Request).where(Request.batch_id == batch_id)
        rows = (await session.scalars(query)).all()
        for row in rows:
            session.expunge(row)
        return {row.custom_id: row for row in rows}


async def timeline(db: Database, batch_id: int) -> str:
    """The batch's timeline reasons, joined."""
    async with db.transaction() as session:
        rows = await session.scalars(
            select(BatchEvent).where(BatchEvent.batch_id == batch_id).order_by(BatchEvent.id)
        )
        return " | ".join(f"{e.to_status}: {e.reason}" for e in rows.all())


async def run_until(run: AnthropicRunner, batch_id: int, statuses: set[str] | None = None) -> Batch:
    """Call submit and poll until the batch is in one of `statuses` (by default, ended)."""
    wanted = statuses or TERMINAL

    async def reached() -> bool:
        await run.submit()
        await run.poll()
        return (await batch_row(run.db, batch_id)).status in wanted

    await wait_until(reached, timeout=20, interval=0.02, what=f"batch {batch_id} in {sorted(wanted)}")
    return await batch_row(run.db, batch_id)
