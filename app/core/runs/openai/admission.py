"""Admission of OpenAI batches: estimate their input tokens, then let ready batches go to OpenAI
oldest first per model, within each model's enqueued-token limit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.rules import leases, states
from app.core.rules.states import B, R
from app.core.runs.openai import tables as model_tables
from app.core.runs.openai import tokens
from app.db.models import Batch, Request
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.config import Settings

# Batches holding enqueued tokens at OpenAI (for the queue limit).
ENQUEUED = (B.SUBMITTING, B.PROCESSING, B.CANCELLING)
ESTIMATE_CHUNK = 2000
# How many ready batches one round looks at (admitted or told why they wait).
READY_SCAN = 100


async def estimate_missing(db: Database, backend: str) -> None:
    """Estimate the input tokens of every ready batch of `backend` that has no estimate yet."""
    async with db.transaction() as session:
        ids = (
            await session.scalars(
                select(Batch.id).where(
                    Batch.backend == backend, Batch.status == B.READY, Batch.estimated_tokens.is_(None)
                )
            )
        ).all()
    for batch_id in ids:
        estimate = await _estimate(db, batch_id)
        async with db.transaction() as session:
            await session.execute(update(Batch).where(Batch.id == batch_id).values(estimated_tokens=estimate))


async def _estimate(db: Database, batch_id: int) -> int:
    """Input tokens of the batch's requests, read in chunks and counted off the event loop."""
    total, after = 0, 0
    while True:
        async with db.transaction() as session:
            rows = (
                await session.execute(
                    select(Request.id, Request.model, Request.body)
                    .where(Request.batch_id == batch_id, Request.status == R.BATCHED, Request.id > after)
                    .order_by(Request.id)
                    .limit(ESTIMATE_CHUNK)
                )
            ).all()
        if not rows:
            return total
        after = rows[-1][0]
        total += await asyncio.to_thread(_count, rows)


def _count(rows: Sequence[Row[tuple[int, str, dict[str, Any]]]]) -> int:
    return sum(tokens.estimate(body, tokens.encoding_for(model)) for _, model, body in rows)


async def admit(db: Database, settings: Settings, owner: str, at_most: int, backend: str) -> list[int]:
    """Lease and move to submitting up to `at_most` ready batches, oldest first per model.

    A batch that does not fit its model's enqueued-token limit holds back the later ones of its
    model, so small batches cannot starve a large one; a batch larger than the whole limit goes
    alone, when nothing else of its model is enqueued.
    """
    now = utcnow()
    admitted: list[int] = []
    async with db.transaction() as session:
        ready = await _ready(session, now, backend)
        enqueued = await _enqueued(session, backend) if ready else {}
        held_back: dict[str, int] = {}
        for batch in ready:
            need = batch.estimated_tokens or 0
            tokens_max, source = model_tables.token_limit(batch.model, settings)
            used = enqueued.get(batch.model, 0)
            if batch.model in held_back:
                _wait(session, batch, f"queued behind batch {held_back[batch.model]} (oldest first)")
            elif used and used + need > tokens_max:
                held_back[batch.model] = batch.id
                _wait(
                    session,
                    batch,
                    f"waiting for capacity: {used:,} of {tokens_max:,} enqueued tokens of {batch.model} "
                    f"in use ({source}); this batch needs ~{need:,}",
                )
            elif len(admitted) < at_most:
                enqueued[batch.model] = used + need
                batch.wait_reason = None
                batch.leased_by = owner
                batch.leased_until = leases.until(session, settings.lease_seconds)
                states.move_batch(
                    session,
                    batch,
                    B.SUBMITTING,
                    f"admitted: ~{need:,} tokens, {used + need:,} of {tokens_max:,} enqueued for "
                    f"{batch.model} ({source})",
                )
                admitted.append(batch.id)
    return admitted


async def _ready(session: AsyncSession, now: datetime, backend: str) -> Sequence[Batch]:
    """The ready batches due for submission that nobody holds, locked, oldest first."""
    return (
        await session.scalars(
            select(Batch)
            .where(
                Batch.backend == backend,
                Batch.status == B.READY,
                Batch.estimated_tokens.is_not(None),
                or_(Batch.next_attempt_at.is_(None), Batch.next_attempt_at <= now),
                leases.lease_free(session, Batch),
            )
            .order_by(Batch.id)
            .limit(READY_SCAN)
            .with_for_update(skip_locked=True)
        )
    ).all()


async def _enqueued(session: AsyncSession, backend: str) -> dict[str, int]:
    """Estimated tokens each model has enqueued at `backend` now."""
    rows = (
        await session.execute(
            select(Batch.model, func.coalesce(func.sum(Batch.estimated_tokens), 0))
            .where(Batch.backend == backend, Batch.status.in_(ENQUEUED))
            .group_by(Batch.model)
        )
    ).all()
    return {model: int(tokens_) for model, tokens_ in rows}


def _wait(session: AsyncSession, batch: Batch, reason: str) -> None:
    """A ready batch is held back: say why (on the timeline when it starts waiting)."""
    if batch.wait_reason is None:
        states.note_batch(session, batch, reason)
    batch.wait_reason = reason
