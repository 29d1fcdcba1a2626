"""Collection: stream an ended batch's results and map each onto its request by custom_id:
`succeeded` → succeeded with the Message as its response body (a chat.completion for a chat
request), `errored` → failed with Anthropic's error, `canceled` → cancelled, `expired` → expired.
A request with no line fails with `no_result`. Applying a line twice changes nothing (results
only land on requests still processing), so an interrupted collection is simply done again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from app.backends.base import BatchAPIError, LineResult
from app.core import results
from app.core.rules import leases, states
from app.core.rules.states import B, R
from app.core.runs.anthropic import endings
from app.core.runs.anthropic.body import request_id_of
from app.core.runs.openai.common import FOLLOWED, LINES_PER_TRANSACTION, request_ids
from app.db.models import Batch, Request
from app.formats.anthropic_messages import MESSAGES_URL
from app.formats.chat_to_anthropic import to_completion
from app.ground import jsontext
from app.ground.clock import utcnow

if TYPE_CHECKING:
    from app.core.runs.anthropic.runner import AnthropicRunner


class ResultsGone(BatchAPIError):
    """Anthropic no longer has the batch's results (archived, or 29 days have passed): an
    answer, not a fault, so it is not retried and logs no traceback."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, 404)
        self.detail = detail


@dataclass
class Tally:
    stored: int = 0
    cancelled: int = 0
    expired: int = 0
    unknown: int = 0  # lines that name no request of this submission


async def collect(run: AnthropicRunner, batch_id: int, remote: dict[str, Any]) -> None:
    """Read the results of an ended batch, apply them, settle the requests without a line."""
    _check_kept(remote)
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, *FOLLOWED)
        if batch is None or batch.submission_key is None:
            return
        key = batch.submission_key
        if batch.status != B.COLLECTING:
            states.move_batch(session, batch, B.COLLECTING, "Anthropic batch ended; reading its results")
    tally, chunk = Tally(), []
    try:
        async for line in run.backend.result_lines(str(remote["results_url"])):
            chunk.append(line)
            if len(chunk) >= LINES_PER_TRANSACTION:
                await _apply(run, batch_id, key, chunk, tally)
                chunk = []
    except BatchAPIError as exc:
        if exc.status in (404, 410):
            raise ResultsGone(exc.message) from exc
        raise
    await _apply(run, batch_id, key, chunk, tally)
    # Cancelled only when the cancel reached Anthropic in time: one that came after the batch
    # ended leaves it done, with every result it has.
    await _finish(run, batch_id, bool(remote.get("cancel_initiated_at")), tally)
    run.on_results()


def _check_kept(remote: dict[str, Any]) -> None:
    if remote.get("archived_at"):
        raise ResultsGone(f"archived at {remote['archived_at']}")
    if not remote.get("results_url"):
        raise ResultsGone("the ended batch has no results_url")
    try:
        created = datetime.fromisoformat(str(remote.get("created_at")))
    except ValueError:
        return
    if utcnow() - created > endings.RESULTS_KEPT:
        raise ResultsGone(f"created at {remote['created_at']}")


def _outcome(line: dict[str, Any], request_id: int, custom_id: str, endpoint: str) -> LineResult | str:
    """The line as a result to store, or "canceled"/"expired" (no result, a status)."""
    result = line.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message") or {}
        body = message if endpoint == MESSAGES_URL else to_completion(message)
        response = {"status_code": 200, "request_id": str(message.get("id") or ""), "body": body}
        return LineResult(request_id, custom_id, response, None)
    if kind in ("canceled", "expired"):
        return str(kind)
    outer = result.get("error") or {}
    inner: dict[str, Any] = outer["error"] if isinstance(outer.get("error"), dict) else outer
    error = {
        "code": str(inner.get("type") or "errored"),
        "message": str(inner.get("message") or "Anthropic answered an error for this request"),
    }
    return LineResult(request_id, custom_id, None, error)


async def _apply(run: AnthropicRunner, batch_id: int, key: str, lines: Sequence[str], tally: Tally) -> None:
    by_id: dict[int, dict[str, Any]] = {}
    for raw in lines:
        try:
            line = jsontext.loads(raw)
            request_id = request_id_of(key, str(line["custom_id"]))
        except (ValueError, KeyError, TypeError):
            request_id = None
        if request_id is None:
            tally.unknown += 1
        else:
            by_id[request_id] = line
    if not by_id:
        return
    async with run.db.transaction() as session:
        rows = (
            await session.execute(
                select(Request.id, Request.custom_id, Request.endpoint).where(
                    Request.batch_id == batch_id, Request.id.in_(by_id), Request.status == R.PROCESSING
                )
            )
        ).all()
        stored: list[LineResult] = []
        ended: dict[str, list[int]] = {"canceled": [], "expired": []}
        for request_id, custom_id, endpoint in rows:
            outcome = _outcome(by_id[request_id], request_id, custom_id, endpoint)
            if isinstance(outcome, str):
                ended[outcome].append(request_id)
            else:
                stored.append(outcome)
        tally.stored += await results.record(session, batch_id, stored)
        tally.cancelled += len(
            await results.close_without_result(
                session, ended["canceled"], R.PROCESSING, R.CANCELLED, endings.REMOTE_CANCELLED.error()
            )
        )
        tally.expired += len(
            await results.close_without_result(
                session, ended["expired"], R.PROCESSING, R.EXPIRED, endings.REMOTE_EXPIRED.error()
            )
        )


async def _finish(run: AnthropicRunner, batch_id: int, cancelled: bool, tally: Tally) -> None:
    """Fail the requests no line named and end the batch (cancelled when Anthropic took a cancel)."""
    async with run.db.transaction() as session:
        batch = await leases.lock(session, Batch, batch_id, B.COLLECTING)
        if batch is None:
            return
        left = await request_ids(session, batch_id, R.PROCESSING)
        missing = [LineResult(rid, "", None, endings.NO_RESULT.error()) for rid in left]
        await results.record(session, batch_id, missing)
        leases.release(batch)
        batch.next_attempt_at = None
        reason = f"{batch.completed_count} succeeded, {batch.failed_count} failed"
        for count, what in (
            (tally.cancelled, "cancelled"),
            (tally.expired, "expired"),
            (len(left), "without a result"),
        ):
            if count:
                reason += f", {count} {what}"
        if tally.unknown:
            reason += f"; {tally.unknown} result lines named no request of this batch"
        states.move_batch(session, batch, B.CANCELLED if cancelled else B.DONE, reason)
