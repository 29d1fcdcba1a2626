"""Collection: read a finished remote batch's output and error files, apply their lines by
custom_id, resubmit the requests that get another try, and end the batch.

Applying a line twice changes nothing (results only land on requests still processing), so a
collection interrupted by a crash is simply done again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import LineResult
from app.core import results
from app.core.rules import audit, leases, states
from app.core.rules.states import NATIVE_SCOPE, B, R
from app.core.runs.openai import endings
from app.core.runs.openai.common import FOLLOWED, LINES_PER_TRANSACTION, Run, request_ids
from app.core.runs.openai.outcomes import Outcome, Parsed, parse
from app.db.models import Batch, Request
from app.db.planner import unindexed
from app.db.session import is_unavailable
from app.ground.clock import utcnow

log = logging.getLogger(__name__)

# The remote end states whose files are collected, and the local status each ends in.
REMOTE_FINISHED = {"completed": B.DONE, "expired": B.EXPIRED, "cancelled": B.CANCELLED}


@dataclass
class Collected:
    """What one collection did so far, for the batch's closing reason."""

    stored: int = 0
    resubmitted: int = 0
    malformed: int = 0
    ids: set[int] = field(default_factory=set)
    # The batch's requests still processing when the collection began, by custom_id: the only
    # ones a line can land on (a collecting batch gains none). Read once, so each chunk reads its
    # rows by primary key, not by 1,000 custom_ids (on PostgreSQL, without statistics yet on a
    # batch just loaded, that read every request of the batch: 36 ms a chunk, and growing).
    open_ids: dict[str, list[int]] = field(default_factory=dict)


async def collect(run: Run, batch_id: int, remote: dict[str, Any]) -> None:
    """Apply the output and error files' lines, settle the requests without one, finish."""
    status = str(remote["status"])
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, *FOLLOWED)
        if batch is None:
            return
        batch.output_file_id = remote.get("output_file_id")
        batch.error_file_id = remote.get("error_file_id")
        if batch.status != B.COLLECTING:
            states.move_batch(session, batch, B.COLLECTING, f"OpenAI batch {status}; reading its files")
    collected = Collected(open_ids=await _open_ids(run, batch_id))
    await _apply_files(run, batch_id, [remote.get("output_file_id"), remote.get("error_file_id")], collected)
    await _finish(run, batch_id, remote, collected)
    run.on_results()


async def _apply_files(run: Run, batch_id: int, file_ids: list[Any], collected: Collected) -> None:
    """Apply the files' lines a chunk at a time, in order. On PostgreSQL, while one chunk is
    stored (the server's work), the next is read and decoded; each chunk's transaction still
    ends before the next one's begins. On SQLite one chunk is read, decoded and stored after
    the other: aiosqlite's thread takes the GIL back for every row it binds or reads, and while
    this thread decoded it waited up to the switch interval (5 ms) a row; overlapped took longer
    than one after the other (docs/benchmarks.md, issue 30 round 5)."""
    storing: asyncio.Task[None] | None = None
    overlap = run.db.is_postgres

    async def then_store(lines: list[str]) -> asyncio.Task[None]:
        ready = parse(lines)
        if storing is not None:
            await storing
        task = asyncio.ensure_future(apply_isolated(run, batch_id, ready, collected))
        if not overlap:
            await task
        return task

    try:
        for file_id in file_ids:
            if not file_id:
                continue
            chunk: list[str] = []
            async for line in run.backend.file_lines(str(file_id)):
                chunk.append(line)
                if len(chunk) >= LINES_PER_TRANSACTION:
                    storing, chunk = await then_store(chunk), []
            storing = await then_store(chunk)
        if storing is not None:
            await storing
    finally:
        if storing is not None and not storing.done():  # this failed or was cancelled
            storing.cancel()
            await asyncio.wait({storing})


async def apply_isolated(run: Run, batch_id: int, chunk: Parsed, collected: Collected) -> None:
    """Apply a chunk; when the database refuses it, apply its lines one by one, and a line the
    database refuses on its own fails its request with result_not_stored: the other results,
    already paid for, are kept. (A database that is down refuses everything: that raises.)"""
    malformed = collected.malformed
    try:
        return await apply(run, batch_id, chunk, collected)
    except Exception as exc:
        if is_unavailable(exc):
            raise
        log.exception("%s result lines of batch %s failed to store together", len(chunk.raw), batch_id)
        collected.malformed = malformed  # counted again below
    for raw in chunk.raw:
        try:
            await apply(run, batch_id, parse([raw]), collected)
        except Exception as exc:
            if is_unavailable(exc):
                raise
            await apply(run, batch_id, parse([_not_stored(raw, exc)]), collected)


def _not_stored(raw: str, exc: Exception) -> str:
    """The line as a failure of its request: what the database refused is not kept."""
    message = f"the result could not be stored: {type(exc).__name__}: {exc}"[:1000]
    custom_id = json.loads(raw)["custom_id"]  # it parsed, or apply would not have raised
    return json.dumps(
        {"custom_id": custom_id, "response": None, "error": {"code": "result_not_stored", "message": message}}
    )


async def apply(run: Run, batch_id: int, chunk: Parsed, collected: Collected) -> None:
    """Apply one chunk of output/error lines; lines are matched on custom_id, in any order."""
    collected.malformed += chunk.malformed
    lines = chunk.lines
    ids = [i for custom_id in lines for i in collected.open_ids.get(custom_id, ())]
    if not ids:
        return
    resubmit_max = run.effective.current.openai_resubmit_max
    async with run.db.transaction() as session:
        rows = (await session.execute(OPEN_LINES, {"ids": ids, "batch_id": batch_id})).all()
        now = utcnow()
        stored, outcomes, again = [], [], []
        usage = dict.fromkeys(results.USAGE_COLUMNS, 0)
        for row in rows:
            line = lines[row.custom_id]
            collected.ids.add(row.id)
            if line.kind == "expired" or (line.kind == "server_error" and row.resubmits < resubmit_max):
                again.append(row.id)
                continue
            stored.append(row)
            outcomes.append(_values(row, line, now))
            for column, count in line.tokens.items():
                usage[column] += count
        collected.stored += await results.store_outcomes(session, batch_id, stored, outcomes, usage, now)
        collected.resubmitted += await resubmit(
            session, batch_id, again, endings.ANSWERED_RESUBMIT, resubmit_max
        )


def _values(row: Any, line: Outcome, now: datetime) -> dict[str, Any]:
    """The row values of a request's line (stored, not resubmitted): a server error that came
    back more often than it may be resubmitted fails its request, saying so."""
    error = line.error
    if line.kind == "server_error":
        error = {
            **(error or {}),
            **endings.SERVER_ERROR_PERSISTS.error(
                code=(error or {}).get("code"),
                detail=(error or {}).get("message", "server error"),
                resubmits=row.resubmits,
            ),
        }
    return {
        "id": row.id,
        "status": R.SUCCEEDED if error is None else R.FAILED,
        "response": line.response,
        "error": error,
        "inference_attempts": max(row.inference_attempts, 1),
        "completed_at": now,
        **line.usage,
    }


async def _open_ids(run: Run, batch_id: int) -> dict[str, list[int]]:
    """The batch's requests still processing, by custom_id (Collected.open_ids)."""
    found: dict[str, list[int]] = {}
    async with run.db.transaction() as session:
        rows = await session.execute(
            select(Request.custom_id, Request.id).where(
                Request.batch_id == batch_id, Request.status == R.PROCESSING
            )
        )
        for custom_id, request_id in rows:
            found.setdefault(custom_id, []).append(request_id)
    return found


_requests = Request.__table__
# The batch's requests still processing among a chunk's (by id), locked: what `results.record`
# reads, and what storing a line needs. Core columns and one statement built once: the ORM's
# loading and a new IN list of 1,000 literals each chunk cost twice what SQLite takes to answer.
# Both databases would rather take the batch_id or the status index (SQLite has no statistics,
# PostgreSQL none yet for a batch just loaded) and read every request of the batch for each
# chunk; `unindexed` leaves them the primary key, one probe a line.
OPEN_LINES = (
    select(*(_requests.c[c.key] for c in results.OUTCOME_COLUMNS))
    .add_columns(_requests.c.inference_attempts, _requests.c.resubmits)
    .where(
        _requests.c.id.in_(bindparam("ids", expanding=True)),
        unindexed(_requests.c.batch_id) == bindparam("batch_id"),
        unindexed(_requests.c.status) == R.PROCESSING,
    )
    .with_for_update()
)


async def resubmit(session: AsyncSession, batch_id: int, ids: Sequence[int], why: str, limit: int) -> int:
    """Send requests back to batching (a new batch) while they have resubmissions left; fail
    the rest. Returns how many went back."""
    if not ids:
        return 0
    rows = (
        await session.execute(
            select(Request.id, Request.resubmits, Request.scope).where(
                Request.id.in_(ids), Request.status == R.PROCESSING
            )
        )
    ).all()
    # A drop-in batch's membership is fixed (its user reads one set of files): never resubmitted.
    again = [rid for rid, count, scope in rows if count < limit and scope == NATIVE_SCOPE]
    spent = [rid for rid, count, scope in rows if rid not in again]
    moved = await states.move_requests(
        session,
        again,
        R.PROCESSING,
        R.PENDING,
        batch_id=None,
        batch_line=None,
        submitted_at=None,
        resubmits=Request.resubmits + 1,
    )
    await audit.note_requests(session, again, "resubmitted", {"batch_id": batch_id, "reason": why})
    if spent:
        error = endings.RESUBMIT_LIMIT.error(why=why, limit=limit)
        await results.record(session, batch_id, [LineResult(rid, "", None, error) for rid in spent])
    return moved


async def _finish(run: Run, batch_id: int, remote: dict[str, Any], collected: Collected) -> None:
    """Settle the requests no line was applied to and end the batch as OpenAI's status says."""
    status = str(remote["status"])
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.COLLECTING)
        if batch is None:
            return
        left = await request_ids(session, batch_id, R.PROCESSING)
        cancelled = 0
        if status == "cancelled":
            error = endings.REMOTE_CANCELLED.error()
            cancelled = len(
                await results.close_without_result(session, left, R.PROCESSING, R.CANCELLED, error)
            )
        else:
            why = endings.EXPIRED_BEFORE_RUN if status == "expired" else endings.NO_LINE
            limit = run.effective.current.openai_resubmit_max
            collected.resubmitted += await resubmit(session, batch_id, left, why, limit)
        if usage := remote.get("usage"):
            for column, tokens in results.usage_columns(usage).items():
                setattr(batch, column, tokens)
        leases.release(batch)
        batch.next_attempt_at = None
        states.move_batch(
            session, batch, REMOTE_FINISHED[status], _closing_reason(batch, collected, cancelled)
        )


def _closing_reason(batch: Batch, collected: Collected, cancelled: int) -> str:
    reason = f"{batch.completed_count} succeeded, {batch.failed_count} failed"
    if collected.resubmitted:
        reason += f", {collected.resubmitted} resubmitted in a new batch"
    if cancelled:
        reason += f", {cancelled} cancelled"
    if collected.malformed:
        reason += f"; {collected.malformed} malformed output lines skipped"
    return reason
