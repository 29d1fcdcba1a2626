"""The OpenAI batch lifecycle: admit, upload and create; poll; collect; clean up.

Each step claims its batches with a lease, talks to the API outside any transaction and records
what it learnt in short transactions, so a process can die at any line and the next claim
resumes: a stale `submitting` batch is submitted again, a stale `collecting` one collected again
(applying a line twice changes nothing: results only land on requests still processing).

Every loop ends somewhere. Submission gives up after SUBMIT_ATTEMPTS, polling after
POLL_FAILURES_MAX consecutive failures, a late output file after OUTPUT_REPOLLS_MAX polls, a
remote cancel after CANCELLING_MAX, token_limit_exceeded after OPENAI_TOKEN_LIMIT_RETRIES
backoffs, and a request is resubmitted at most OPENAI_RESUBMIT_MAX times. Each ends in a
terminal state with the reason on the batch's timeline and in the requests' delivered errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import LineResult
from app.backends.openai import AuthRefused, OpenAIBackend, OpenAIError
from app.config import Settings
from app.core import results
from app.core.rules import audit, leases, states
from app.core.runs.openai import admission
from app.core.runs.openai.answers import classify, files_missing, line_error, summary
from app.core.runtime.clock import utcnow
from app.db.models import Batch, Request
from app.db.session import Database

log = logging.getLogger(__name__)

REMOTE_RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
REMOTE_FINISHED = {"completed": "done", "expired": "expired", "cancelled": "cancelled"}
SUBMIT_ATTEMPTS = 3
POLL_FAILURES_MAX = 8
OUTPUT_REPOLLS_MAX = 10
CANCELLING_MAX = timedelta(hours=1)
# A remote batch still running this long after its expires_at is not keeping its contract.
OVERDUE_GRACE = timedelta(hours=6)
MAX_BACKOFF_SECONDS = 3600.0
PARALLEL = 4
LINES_PER_TRANSACTION = 1000


@dataclass
class AuthGate:
    """A 401/403 stops submitting and polling in this process until a probe shows the key works."""

    reason: str | None = None
    since: datetime | None = None
    recheck_at: float = 0.0

    def close(self, error: OpenAIError, recheck_seconds: float) -> None:
        if self.reason is None:
            log.error("OpenAI refused our credentials; submission stops: %s", error.message)
            self.since = utcnow()
        self.reason = f"OpenAI refused the API key ({error.status}): {error.message}"
        self.recheck_at = time.monotonic() + recheck_seconds


@dataclass
class _Collected:
    stored: int = 0
    resubmitted: int = 0
    malformed: int = 0
    ids: set[int] = field(default_factory=set)


class OpenAIRunner:
    """Moves OpenAI batches through their lifecycle; the worker calls `submit` and `poll`."""

    def __init__(
        self,
        db: Database,
        settings: Callable[[], Settings],
        backend: OpenAIBackend,
        owner: str,
        on_results: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.backend = backend
        self.owner = owner
        self.on_results = on_results
        self.gate = AuthGate()

    async def open_gate(self) -> bool:
        """True when calls may go out; while the gate is shut, re-probe the key now and then."""
        if not self.backend.configured:
            return False
        if self.gate.reason is None:
            return True
        if time.monotonic() < self.gate.recheck_at:
            return False
        status = await self.backend.probe()
        if not status.reachable:
            self.gate.recheck_at = time.monotonic() + self.settings().openai_auth_recheck_seconds
            return False
        log.info("OpenAI accepts our key again; submission resumes")
        self.gate = AuthGate()
        return True

    # -- submit ----------------------------------------------------------------------------

    async def submit(self) -> bool:
        """Admit ready batches oldest first within the token limits and submit them."""
        if not await self.open_gate():
            why = self.gate.reason or "OPENAI_API_KEY is not set"
            await self._mark_waiting(f"submission stopped for all batches: {why}")
            return False
        await self._recover_interrupted()
        await admission.estimate_missing(self.db)
        admitted = await admission.admit(self.db, self.settings(), self.owner, PARALLEL)
        await asyncio.gather(*(self._submit_one(batch_id) for batch_id in admitted))
        return bool(admitted)

    async def _mark_waiting(self, reason: str) -> None:
        """Say on every ready batch why nothing is submitted (one statement; a no-op once said)."""
        async with self.db.transaction() as session:
            await session.execute(
                update(Batch)
                .where(
                    Batch.backend == "openai",
                    Batch.status == "ready",
                    or_(Batch.wait_reason.is_(None), Batch.wait_reason != reason),
                )
                .values(wait_reason=reason)
            )

    async def _recover_interrupted(self) -> None:
        """A submission whose process died (lease ran out) starts again from ready."""
        async with self.db.transaction() as session:
            stale = (
                await session.scalars(
                    select(Batch)
                    .where(Batch.backend == "openai", Batch.status == "submitting", leases.lease_free(Batch))
                    .with_for_update(skip_locked=True)
                )
            ).all()
            orphans = [batch.input_file_id for batch in stale if batch.input_file_id]
            for batch in stale:
                message = "submission interrupted (its process stopped)"
                self._submission_failed(session, batch, message, retryable=True)
                if batch.status == "failed":
                    await self._fail_requests(session, batch, "batched", "submission_failed", message)
        if orphans:
            await self._delete_quietly(orphans)

    async def _submit_one(self, batch_id: int) -> None:
        settings = self.settings()
        file_id: str | None = None
        try:
            async with leases.held(self.db, Batch, batch_id, self.owner, settings.lease_seconds):
                with tempfile.TemporaryFile() as file:
                    lines, endpoint = await self._write_input(batch_id, file)
                    if not lines:
                        await self._nothing_to_submit(batch_id)
                        return
                    file_id = await self.backend.upload(file, f"batchgate-batch-{batch_id}.jsonl")
                async with self.db.transaction() as session:
                    await session.execute(
                        update(Batch).where(Batch.id == batch_id).values(input_file_id=file_id)
                    )
                remote = await self.backend.create_batch(
                    file_id, endpoint, {"batchgate_batch_id": str(batch_id)}
                )
                await self._created(batch_id, remote, lines)
        except asyncio.CancelledError:
            raise
        except AuthRefused as exc:
            self.gate.close(exc, settings.openai_auth_recheck_seconds)
            await self._submit_failed(batch_id, exc, file_id)
        except Exception as exc:
            if not isinstance(exc, OpenAIError):
                log.exception("submitting batch %s failed", batch_id)
            await self._submit_failed(batch_id, exc, file_id)

    async def _write_input(self, batch_id: int, file: IO[bytes]) -> tuple[int, str]:
        """Number the batch's requests and write them as JSONL to `file`, a chunk at a time."""
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id)
            assert batch is not None
            numbered = (
                select(Request.id, func.row_number().over(order_by=Request.id).label("line"))
                .where(Request.batch_id == batch_id, Request.status == "batched")
                .subquery()
            )
            await session.execute(
                update(Request)
                .where(Request.id == numbered.c.id)
                .values(batch_line=numbered.c.line)
                .execution_options(synchronize_session=False)
            )
            endpoint = batch.endpoint
        written, after = 0, 0
        while True:
            async with self.db.transaction() as session:
                rows = (
                    await session.execute(
                        select(Request.batch_line, Request.custom_id, Request.endpoint, Request.body)
                        .where(
                            Request.batch_id == batch_id,
                            Request.status == "batched",
                            Request.batch_line > after,
                        )
                        .order_by(Request.batch_line)
                        .limit(LINES_PER_TRANSACTION)
                    )
                ).all()
            if not rows:
                return written, endpoint
            for line, custom_id, url, body in rows:
                record = {"custom_id": custom_id, "method": "POST", "url": url, "body": body}
                file.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
                written, after = line, line

    async def _created(self, batch_id: int, remote: dict[str, Any], lines: int) -> None:
        now = utcnow()
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id, with_for_update=True)
            if batch is None or batch.status != "submitting":
                return
            batch.remote_batch_id = str(remote["id"])
            batch.remote_status = str(remote.get("status") or "validating")
            batch.run_failures = 0
            batch.output_repolls = 0
            batch.cancel_sent = False
            batch.files_deleted_at = None
            batch.next_attempt_at = now  # poll at once
            leases.release(batch)
            states.move_batch(
                session, batch, "processing", f"OpenAI batch {batch.remote_batch_id} created ({lines} lines)"
            )
            ids = (
                await session.scalars(
                    select(Request.id).where(Request.batch_id == batch_id, Request.status == "batched")
                )
            ).all()
            await states.move_requests(
                session,
                ids,
                "batched",
                "processing",
                submitted_at=now,
                inference_attempts=Request.inference_attempts + 1,
            )

    async def _nothing_to_submit(self, batch_id: int) -> None:
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id, with_for_update=True)
            if batch is not None and batch.status == "submitting":
                leases.release(batch)
                states.move_batch(session, batch, "failed", "no request left to submit (all cancelled)")

    async def _submit_failed(self, batch_id: int, exc: Exception, file_id: str | None) -> None:
        message = exc.message if isinstance(exc, OpenAIError) else f"{type(exc).__name__}: {exc}"
        auth = isinstance(exc, AuthRefused)
        retryable = auth or not isinstance(exc, OpenAIError) or exc.retryable
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id, with_for_update=True)
            if batch is None or batch.status != "submitting":
                return
            if auth:
                # Not the batch's fault: it waits, uncounted, until the key works again.
                leases.release(batch)
                batch.input_file_id = None
                states.move_batch(session, batch, "ready", f"not submitted: {message}")
                batch.wait_reason = f"submission stopped for all batches: {self.gate.reason}"
            else:
                self._submission_failed(session, batch, message, retryable)
                if batch.status == "failed":
                    await self._fail_requests(session, batch, "batched", "submission_failed", message)
        if file_id is not None:
            await self._delete_quietly([file_id])
        self.on_results()

    def _submission_failed(self, session: AsyncSession, batch: Batch, message: str, retryable: bool) -> None:
        """Back to ready with backoff while attempts remain, else failed (the caller fails the
        requests, which needs an await)."""
        batch.run_failures += 1
        leases.release(batch)
        batch.input_file_id = None
        if retryable and batch.run_failures < SUBMIT_ATTEMPTS:
            delay = _backoff(self.settings().openai_poll_seconds, batch.run_failures)
            batch.next_attempt_at = utcnow() + timedelta(seconds=delay)
            reason = (
                f"submission failed ({message}); attempt {batch.run_failures + 1} of {SUBMIT_ATTEMPTS} "
                f"in {_duration(delay)}"
            )
            states.move_batch(session, batch, "ready", reason)
            batch.wait_reason = reason
            return
        batch.error = {"code": "submission_failed", "message": message}
        tried = f"after {batch.run_failures} attempts" if retryable else "refused"
        states.move_batch(session, batch, "failed", f"submission failed {tried}: {message}")

    # -- poll and collect --------------------------------------------------------------------

    async def poll(self) -> bool:
        """Poll the remote batches that are due; collect the finished ones."""
        if not await self.open_gate():
            return False
        settings = self.settings()
        now = utcnow()
        async with self.db.transaction() as session:
            ids = await leases.claim(
                session,
                Batch,
                [
                    Batch.backend == "openai",
                    Batch.status.in_(("processing", "cancelling", "collecting")),
                    or_(Batch.next_attempt_at.is_(None), Batch.next_attempt_at <= now),
                ],
                self.owner,
                settings.lease_seconds,
                PARALLEL,
                order_by=Batch.next_attempt_at,
            )
        await asyncio.gather(*(self._poll_one(batch_id) for batch_id in ids))
        return len(ids) == PARALLEL

    async def _poll_one(self, batch_id: int) -> None:
        settings = self.settings()
        try:
            async with leases.held(self.db, Batch, batch_id, self.owner, settings.lease_seconds):
                batch = await self._snapshot(batch_id)
                if batch is None or batch.remote_batch_id is None:
                    return
                if batch.status == "cancelling" and not batch.cancel_sent:
                    if await self.backend.cancel_batch(batch.remote_batch_id) == "gone":
                        await self._cancel_locally(batch_id, "the remote batch is gone (404 on cancel)")
                        return
                    await self._set(batch_id, cancel_sent=True)
                remote = await self.backend.get_batch(batch.remote_batch_id)
                await self._advance(batch, remote)
            if settings.openai_delete_files:
                await self._clean_up(batch_id)  # outside the lease: an ended batch let go of it
        except asyncio.CancelledError:
            raise
        except AuthRefused as exc:
            self.gate.close(exc, settings.openai_auth_recheck_seconds)
            await self._set(batch_id, **leases.RELEASED)
        except Exception as exc:
            if not isinstance(exc, OpenAIError):
                log.exception("polling batch %s failed", batch_id)
            await self._poll_failed(batch_id, exc)

    async def _advance(self, batch: Batch, remote: dict[str, Any]) -> None:
        status = str(remote.get("status"))
        await self._note_remote(batch.id, remote)
        now = utcnow()
        if status in REMOTE_FINISHED:
            if status == "completed" and files_missing(remote) and batch.output_repolls < OUTPUT_REPOLLS_MAX:
                # OpenAI can say completed a moment before it fills in the file ids.
                await self._set(
                    batch.id,
                    output_repolls=batch.output_repolls + 1,
                    next_attempt_at=now + timedelta(seconds=self._poll_delay()),
                    **leases.RELEASED,
                )
                return
            await self._collect(batch.id, remote)
        elif status == "failed":
            await self._remote_failed(batch.id, remote)
        else:
            expires_at = remote.get("expires_at")
            if (
                isinstance(expires_at, int | float)
                and now.timestamp() > expires_at + OVERDUE_GRACE.total_seconds()
            ):
                await self._give_up(
                    batch.id, "remote_overdue", f"OpenAI still reports {status} long after expiry"
                )
                return
            if batch.status == "cancelling" and now - batch.status_changed_at > CANCELLING_MAX:
                await self._cancel_locally(
                    batch.id, f"the remote cancel did not finish within {CANCELLING_MAX}"
                )
                return
            await self._set(
                batch.id,
                next_attempt_at=now + timedelta(seconds=self._poll_delay()),
                run_failures=0,
                **leases.RELEASED,
            )

    def _poll_delay(self) -> float:
        # Jitter spreads many batches' polls instead of firing them on the same tick.
        return self.settings().openai_poll_seconds * random.uniform(0.8, 1.2)

    async def _note_remote(self, batch_id: int, remote: dict[str, Any]) -> None:
        """Keep the remote status (a change goes on the timeline) and the counts OpenAI reports."""
        status = str(remote.get("status"))
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id, with_for_update=True)
            if batch is None or batch.remote_status == status:
                return
            batch.remote_status = status
            counts = remote.get("request_counts") or {}
            states.note_batch(
                session,
                batch,
                f"OpenAI: {status} ({counts.get('completed', 0)} completed, {counts.get('failed', 0)} "
                f"failed of {counts.get('total', 0)})",
            )

    async def _collect(self, batch_id: int, remote: dict[str, Any]) -> None:
        """Apply the output and error files' lines, settle the requests without one, finish."""
        status = str(remote["status"])
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id, with_for_update=True)
            if batch is None or batch.status not in ("processing", "cancelling", "collecting"):
                return
            batch.output_file_id = remote.get("output_file_id")
            batch.error_file_id = remote.get("error_file_id")
            if batch.status != "collecting":
                states.move_batch(session, batch, "collecting", f"OpenAI batch {status}; reading its files")
        collected = _Collected()
        for file_id in (remote.get("output_file_id"), remote.get("error_file_id")):
            if not file_id:
                continue
            chunk: list[str] = []
            async for line in self.backend.file_lines(str(file_id)):
                chunk.append(line)
                if len(chunk) >= LINES_PER_TRANSACTION:
                    await self._apply(batch_id, chunk, collected)
                    chunk = []
            await self._apply(batch_id, chunk, collected)
        await self._finish(batch_id, remote, collected)
        self.on_results()

    async def _apply(self, batch_id: int, lines: Sequence[str], collected: _Collected) -> None:
        """Apply one chunk of output/error lines; lines are matched on custom_id, in any order."""
        parsed: dict[str, dict[str, Any]] = {}
        for raw in lines:
            try:
                line = json.loads(raw)
                parsed[str(line["custom_id"])] = line
            except (ValueError, KeyError, TypeError):
                collected.malformed += 1  # its request gets no line and is resubmitted
        if not parsed:
            return
        resubmit_max = self.settings().openai_resubmit_max
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    select(
                        Request.id, Request.custom_id, Request.inference_attempts, Request.resubmits
                    ).where(
                        Request.batch_id == batch_id,
                        Request.custom_id.in_(parsed),
                        Request.status == "processing",
                    )
                )
            ).all()
            outcomes: list[LineResult] = []
            resubmit: list[int] = []
            for request_id, custom_id, attempts, resubmits in rows:
                kind, error = classify(parsed[custom_id])
                collected.ids.add(request_id)
                if kind == "expired" or (kind == "server_error" and resubmits < resubmit_max):
                    resubmit.append(request_id)
                    continue
                if kind == "server_error":
                    error = {
                        **(error or {}),
                        "message": f"{(error or {}).get('message', 'server error')} "
                        f"(still failing after {resubmits} resubmissions)",
                    }
                response = parsed[custom_id].get("response")
                outcomes.append(LineResult(request_id, custom_id, response, error, max(attempts, 1)))
            collected.stored += await results.record(session, batch_id, outcomes)
            collected.resubmitted += await self._resubmit(
                session, batch_id, resubmit, "resubmitted by OpenAI's answer"
            )

    async def _finish(self, batch_id: int, remote: dict[str, Any], collected: _Collected) -> None:
        status = str(remote["status"])
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id, with_for_update=True)
            if batch is None or batch.status != "collecting":
                return
            left = list(
                (
                    await session.scalars(
                        select(Request.id).where(Request.batch_id == batch_id, Request.status == "processing")
                    )
                ).all()
            )
            cancelled = 0
            if status == "cancelled":
                cancelled = len(
                    await results.close_without_result(
                        session,
                        left,
                        "processing",
                        "cancelled",
                        {"code": "cancelled", "message": "the batch was cancelled before this request ran"},
                    )
                )
            else:
                why = (
                    "the batch expired before it ran" if status == "expired" else "no line in OpenAI's files"
                )
                collected.resubmitted += await self._resubmit(session, batch_id, left, why)
            if usage := remote.get("usage"):
                for column, tokens in results.usage_columns(usage).items():
                    setattr(batch, column, tokens)
            reason = f"{batch.completed_count} succeeded, {batch.failed_count} failed"
            if collected.resubmitted:
                reason += f", {collected.resubmitted} resubmitted in a new batch"
            if cancelled:
                reason += f", {cancelled} cancelled"
            if collected.malformed:
                reason += f"; {collected.malformed} malformed output lines skipped"
            leases.release(batch)
            batch.next_attempt_at = None
            states.move_batch(session, batch, REMOTE_FINISHED[status], reason)

    async def _resubmit(self, session: AsyncSession, batch_id: int, ids: Sequence[int], why: str) -> int:
        """Send requests back to batching (a new batch) while they have resubmissions left; fail
        the rest. Returns how many went back."""
        if not ids:
            return 0
        limit = self.settings().openai_resubmit_max
        rows = (
            await session.execute(
                select(Request.id, Request.resubmits).where(
                    Request.id.in_(ids), Request.status == "processing"
                )
            )
        ).all()
        again = [rid for rid, count in rows if count < limit]
        spent = [rid for rid, count in rows if count >= limit]
        moved = await states.move_requests(
            session,
            again,
            "processing",
            "pending",
            batch_id=None,
            batch_line=None,
            submitted_at=None,
            resubmits=Request.resubmits + 1,
        )
        await audit.note_requests(session, again, "resubmitted", {"batch_id": batch_id, "reason": why})
        if spent:
            error = {"code": "resubmit_limit", "message": f"{why}; gave up after {limit} resubmissions"}
            await results.record(session, batch_id, [LineResult(rid, "", None, error) for rid in spent])
        return moved

    async def _remote_failed(self, batch_id: int, remote: dict[str, Any]) -> None:
        """OpenAI failed the batch: errors.data says why (bad lines, or a full queue)."""
        errors = [e for e in ((remote.get("errors") or {}).get("data") or []) if isinstance(e, dict)]
        settings = self.settings()
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id, with_for_update=True)
            if batch is None or batch.status not in ("processing", "cancelling"):
                return
            leases.release(batch)
            batch.error = {
                "code": "batch_failed",
                "message": summary(errors),
                "errors": errors,
            }
            if batch.status == "cancelling":
                await self._end_cancelled(
                    session, batch, f"OpenAI failed it while cancelling: {summary(errors)}"
                )
            elif any(e.get("code") == "token_limit_exceeded" for e in errors):
                await self._token_limit(session, batch, settings)
            else:
                await self._invalid_lines(session, batch, errors)
        self.on_results()

    async def _token_limit(self, session: AsyncSession, batch: Batch, settings: Settings) -> None:
        """The queue was full: not bad input. Back off 5, 10, 20, 40, 80 minutes, then fail."""
        batch.token_limit_retries += 1
        tries = settings.openai_token_limit_retries
        if batch.token_limit_retries > tries:
            message = f"OpenAI's enqueued-token limit was still exceeded after {tries} retries"
            await self._fail_requests(session, batch, "processing", "token_limit_exceeded", message)
            states.move_batch(session, batch, "failed", message)
            return
        delay = settings.openai_token_limit_backoff_seconds * 2 ** (batch.token_limit_retries - 1)
        ids = (
            await session.scalars(
                select(Request.id).where(Request.batch_id == batch.id, Request.status == "processing")
            )
        ).all()
        await states.move_requests(session, ids, "processing", "batched", batch_line=None)
        reason = (
            f"OpenAI token_limit_exceeded: retry {batch.token_limit_retries} of {tries} in {_duration(delay)}"
        )
        batch.next_attempt_at = utcnow() + timedelta(seconds=delay)
        batch.wait_reason = reason
        batch.remote_batch_id = batch.remote_status = None
        batch.error = None
        states.move_batch(session, batch, "ready", reason)

    async def _invalid_lines(self, session: AsyncSession, batch: Batch, errors: list[dict[str, Any]]) -> None:
        """Fail the lines errors.data names, with its reason; the others did nothing wrong and go
        to a new batch. Without line numbers the whole batch was refused: all its requests fail."""
        by_line = {e["line"]: e for e in errors if isinstance(e.get("line"), int)}
        rows = (
            await session.execute(
                select(Request.id, Request.custom_id, Request.batch_line).where(
                    Request.batch_id == batch.id, Request.status == "processing"
                )
            )
        ).all()
        if by_line:
            named = [
                LineResult(rid, cid, None, line_error(by_line[line]))
                for rid, cid, line in rows
                if line in by_line
            ]
            await results.record(session, batch.id, named)
            others = [rid for rid, _, line in rows if line not in by_line]
            resubmitted = await self._resubmit(
                session, batch.id, others, "another line of its batch was invalid"
            )
            reason = (
                f"OpenAI refused {len(named)} lines ({summary(errors)}); {resubmitted} others resubmitted"
            )
        else:
            first = errors[0] if errors else {}
            code = str(first.get("code") or "batch_failed")
            await self._fail_requests(session, batch, "processing", code, summary(errors))
            reason = f"OpenAI failed the batch: {summary(errors)}"
        states.move_batch(session, batch, "failed", reason)

    async def _cancel_locally(self, batch_id: int, why: str) -> None:
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id, with_for_update=True)
            if batch is not None and batch.status == "cancelling":
                leases.release(batch)
                await self._end_cancelled(session, batch, why)
        self.on_results()

    async def _end_cancelled(self, session: AsyncSession, batch: Batch, why: str) -> None:
        ids = (
            await session.scalars(
                select(Request.id).where(Request.batch_id == batch.id, Request.status == "processing")
            )
        ).all()
        error = {"code": "cancelled", "message": f"the batch was cancelled ({why})"}
        done = await results.close_without_result(session, ids, "processing", "cancelled", error)
        states.move_batch(session, batch, "cancelled", f"{why}; {len(done)} requests cancelled")

    async def _poll_failed(self, batch_id: int, exc: Exception) -> None:
        message = exc.message if isinstance(exc, OpenAIError) else f"{type(exc).__name__}: {exc}"
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id, with_for_update=True)
            if batch is None or batch.status not in ("processing", "cancelling", "collecting"):
                return
            batch.run_failures += 1
            leases.release(batch)
            if batch.run_failures < POLL_FAILURES_MAX:
                delay = _backoff(self.settings().openai_poll_seconds, batch.run_failures)
                batch.next_attempt_at = utcnow() + timedelta(seconds=delay)
                states.note_batch(
                    session,
                    batch,
                    f"talking to OpenAI failed ({message}); try {batch.run_failures + 1} of "
                    f"{POLL_FAILURES_MAX} in {_duration(delay)}",
                )
                return
        await self._give_up(
            batch_id, "remote_unreachable", f"gave up after {POLL_FAILURES_MAX} failures: {message}"
        )

    async def _give_up(self, batch_id: int, code: str, message: str) -> None:
        """End a batch whose remote side cannot be followed any more: its requests fail."""
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id, with_for_update=True)
            if batch is None or batch.status not in ("processing", "cancelling", "collecting"):
                return
            leases.release(batch)
            batch.error = {"code": code, "message": message}
            await self._fail_requests(session, batch, "processing", code, message)
            states.move_batch(session, batch, "failed", message)
        self.on_results()

    async def _fail_requests(
        self, session: AsyncSession, batch: Batch, from_status: str, code: str, message: str
    ) -> None:
        ids = (
            await session.scalars(
                select(Request.id).where(Request.batch_id == batch.id, Request.status == from_status)
            )
        ).all()
        error = {"code": code, "message": message}
        if from_status == "processing":
            await results.record(session, batch.id, [LineResult(rid, "", None, error) for rid in ids])
        else:
            failed = await results.close_without_result(session, ids, from_status, "failed", error)
            batch.failed_count += len(failed)

    # -- files ---------------------------------------------------------------------------

    async def delete_files(self, batch_id: int) -> None:
        """Delete the batch's remote files once its results are stored (OPENAI_DELETE_FILES)."""
        batch = await self._snapshot(batch_id)
        if batch is None or batch.files_deleted_at is not None:
            return
        file_ids = [f for f in (batch.input_file_id, batch.output_file_id, batch.error_file_id) if f]
        if not file_ids:
            return
        problem = await self._delete_quietly(file_ids)
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id, with_for_update=True)
            if batch is None:
                return
            if problem:
                states.note_batch(session, batch, f"could not delete its OpenAI files: {problem}")
            else:
                batch.files_deleted_at = utcnow()
                states.note_batch(session, batch, f"deleted its {len(file_ids)} OpenAI files")

    async def _clean_up(self, batch_id: int) -> None:
        """Delete remote files nothing will read again: all of an ended batch's, and the old
        input file of a batch sent back to wait (token_limit_exceeded; it is uploaded afresh)."""
        batch = await self._snapshot(batch_id)
        if batch is None:
            return
        if batch.status in states.BATCH_TERMINAL:
            await self.delete_files(batch_id)
        elif (
            batch.status == "ready"
            and batch.input_file_id
            and batch.remote_batch_id is None
            and not await self._delete_quietly([batch.input_file_id])
        ):
            await self._set(batch_id, input_file_id=None)

    async def _delete_quietly(self, file_ids: Sequence[str]) -> str | None:
        return await delete_remote_files(self.backend, file_ids)

    async def _snapshot(self, batch_id: int) -> Batch | None:
        async with self.db.transaction() as session:
            batch = await session.get(Batch, batch_id)
            if batch is not None:
                session.expunge(batch)
            return batch

    async def _set(self, batch_id: int, **values: Any) -> None:
        async with self.db.transaction() as session:
            await session.execute(update(Batch).where(Batch.id == batch_id).values(**values))


async def delete_remote_files(backend: OpenAIBackend, file_ids: Sequence[str]) -> str | None:
    """Delete remote files (one already gone is fine); returns the first problem, if any."""
    problem = None
    for file_id in file_ids:
        try:
            await backend.delete_file(file_id)
        except Exception as exc:
            log.warning("could not delete OpenAI file %s: %s", file_id, exc)
            problem = problem or str(exc)
    return problem


def _backoff(base: float, failures: int) -> float:
    return min(base * 2 ** (failures - 1), MAX_BACKOFF_SECONDS) * random.uniform(0.8, 1.2)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:.3g}s"
