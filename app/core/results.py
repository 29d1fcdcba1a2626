"""Results: store what a backend returned for each request and queue its delivery."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import LineResult
from app.core import subscriptions
from app.core.rules import fanout, states, storable
from app.core.rules.leases import Hold
from app.db.models import Batch, Delivery, Request
from app.ground import metrics
from app.ground.clock import utcnow
from app.ground.statuses import DeliveryStatus, RequestStatus
from app.net.destinations import destination_of

log = logging.getLogger(__name__)
DELIVERING_CHANNELS = ("webhook", "rabbitmq")
USAGE_COLUMNS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")
# What queuing an ended request's deliveries reads of it: its config, and what its event says.
OUTCOME_COLUMNS = (
    Request.id,
    Request.delivery,
    Request.custom_id,
    Request.model,
    Request.backend,
    Request.origin,
    Request.batch_id,
)


class Finished(Protocol):
    """What a result line is made of: a Request, or a row of these columns (read only: a
    Request's id is)."""

    @property
    def id(self) -> int: ...
    @property
    def custom_id(self) -> str: ...
    @property
    def response(self) -> dict[str, Any] | None: ...
    @property
    def error(self) -> dict[str, Any] | None: ...


def output_line(request: Finished) -> dict[str, Any]:
    """The request's result as one line of an OpenAI batch output file."""
    return {
        "id": f"batch_req_{request.id}",
        "custom_id": request.custom_id,
        "response": request.response,
        "error": request.error,
    }


def file_line(request: Finished) -> dict[str, Any]:
    """The request's result as OpenAI writes it in a batch's output or error file: when the
    server answered with an HTTP error, that answer (its error in the body) is the `response`
    and `error` is null. The native shape (output_line) also names the error, as documented."""
    line = output_line(request)
    status = request.response.get("status_code") if isinstance(request.response, dict) else None
    if isinstance(status, int) and not 200 <= status < 300:
        line["error"] = None
    return line


async def record(
    session: AsyncSession, batch_id: int, results: Sequence[LineResult], hold: Hold | None = None
) -> int:
    """Store results of requests still processing in the batch; returns how many were new.

    Idempotent: a result for a request that already has one (a replay after a crash, a line seen
    twice) changes nothing. With `hold`, only while that claim still holds the batch: a late
    answer of a run that was cancelled, deleted or taken over is dropped, never stored.
    """
    if not results:
        return 0
    if hold is not None and not await _still_held(session, batch_id, hold, len(results)):
        return 0
    by_id = {r.request_id: r for r in results}
    open_rows = (
        await session.execute(
            select(*OUTCOME_COLUMNS)
            .where(
                Request.id.in_(by_id),
                Request.batch_id == batch_id,
                Request.status == RequestStatus.PROCESSING,
            )
            .with_for_update()
        )
    ).all()
    return await record_locked(session, batch_id, [(row, by_id[row.id]) for row in open_rows])


async def record_locked(session: AsyncSession, batch_id: int, found: Sequence[tuple[Any, LineResult]]) -> int:
    """Store the results of requests the caller has read FOR UPDATE and found still processing
    in the batch: each a row of OUTCOME_COLUMNS (more columns may follow) with its result."""
    if not found:
        return 0
    now = utcnow()
    outcomes, usage = [], dict.fromkeys(USAGE_COLUMNS, 0)
    for row, result in found:
        outcome, tokens = _outcome(row.id, result, now)
        outcomes.append(outcome)
        for column, count in tokens.items():
            usage[column] += count
    return await store_outcomes(session, batch_id, [row for row, _ in found], outcomes, usage, now)


async def store_outcomes(
    session: AsyncSession,
    batch_id: int,
    rows: Sequence[Any],
    outcomes: Sequence[dict[str, Any]],
    usage: dict[str, int],
    now: datetime,
) -> int:
    """Store results already made into their rows' values (`outcomes`, one per row of `rows`, as
    `record_locked` makes them: storable, each with the request's id and status), their
    deliveries, and the batch's counts and `usage` (its USAGE_COLUMNS' sums). The caller has
    read the rows FOR UPDATE and found them still processing in the batch. For a caller that
    read each result into its values beforehand (collecting an OpenAI batch does, overlapped
    with storing the chunk before)."""
    if not outcomes:
        return 0
    succeeded = sum(1 for outcome in outcomes if outcome["status"] == RequestStatus.SUCCEEDED)
    await states.set_request_outcomes(session, RequestStatus.PROCESSING, outcomes)
    await _queue_deliveries(session, rows, [o["status"] for o in outcomes], now)
    await session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(
            completed_count=Batch.completed_count + succeeded,
            failed_count=Batch.failed_count + (len(outcomes) - succeeded),
            **{column: getattr(Batch, column) + tokens for column, tokens in usage.items() if tokens},
        )
    )
    return len(outcomes)


def _outcome(request_id: int, result: LineResult, now: datetime) -> tuple[dict[str, Any], dict[str, int]]:
    """The request's row values for its result, and the usage columns it adds to its batch."""
    line = line_usage(result.response)
    tokens = usage_columns(line)
    outcome = {
        "id": request_id,
        "status": RequestStatus.SUCCEEDED if result.succeeded else RequestStatus.FAILED,
        # A model's output is outside text: PostgreSQL refuses a NUL or a lone surrogate.
        "response": storable.json_value(result.response),
        "error": storable.json_value(result.error),
        "inference_attempts": result.attempts,
        "completed_at": now,
        **request_usage(line, tokens),
    }
    return outcome, tokens


async def _still_held(session: AsyncSession, batch_id: int, hold: Hold, results: int) -> bool:
    """Lock the batch if `hold` still holds it; else log and count the `results` dropped. Locked
    until commit, so no claim can take the batch over between this check and the store."""
    found = await session.scalar(
        select(Batch.id).where(Batch.id == batch_id, hold.where(Batch)).with_for_update()
    )
    if found is None:
        log.warning(
            "dropped %s late results of batch %s: this run no longer holds it "
            "(cancelled, deleted or taken over)",
            results,
            batch_id,
        )
        metrics.LATE_RESULTS_DROPPED.inc(results)
    return found is not None


async def close_without_result(
    session: AsyncSession,
    ids: Sequence[int],
    from_status: str,
    to_status: str,
    error: dict[str, Any],
    **values: Any,
) -> list[int]:
    """End requests that will get no backend result (cancelled, expired) and queue the news.

    Only requests still in `from_status` move; returns their ids. Their error is delivered like
    any other result, so a client waiting for an answer is told.
    """
    if not ids:
        return []
    rows = (
        await session.execute(
            select(*OUTCOME_COLUMNS)
            .where(Request.id.in_(ids), Request.status == from_status)
            .with_for_update()
        )
    ).all()
    now = utcnow()
    await states.set_request_outcomes(
        session,
        from_status,
        [{"id": row.id, "status": to_status, "error": error, "completed_at": now, **values} for row in rows],
    )
    await _queue_deliveries(session, rows, [to_status] * len(rows), now)
    return [row.id for row in rows]


async def _queue_deliveries(
    session: AsyncSession, rows: Sequence[Any], statuses: Sequence[str], now: datetime
) -> None:
    """Queue the deliveries of requests that just ended (`rows` of OUTCOME_COLUMNS, each with its
    new status): its result to each destination its config names, and its outcome as an event
    to each subscription that takes it."""
    queued = [delivery for row in rows for delivery in delivery_rows(row.id, row.delivery, now)]
    if listening := await subscriptions.enabled(session):
        for row, status in zip(rows, statuses, strict=True):
            queued += subscriptions.request_event_rows(listening, row, status, now)
    if queued:
        await session.execute(insert(Delivery), queued)


def delivery_rows(request_id: int, config: Any, now: datetime) -> list[dict[str, Any]]:
    """The new, due outbox rows of a request's result: one per destination its config names (an
    object, or a list of them: fan-out), none for 'none'."""
    return [row for entry in fanout.destinations_of(config) if (row := delivery_row(request_id, entry, now))]


def delivery_row(request_id: int, delivery: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    """A new, due outbox row for a request whose delivery config sends somewhere; else None."""
    if not delivery or delivery.get("type") not in DELIVERING_CHANNELS:
        return None
    return {
        "request_id": request_id,
        "channel": delivery["type"],
        "target": delivery,
        "destination": destination_of(delivery),
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "total_attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def line_usage(response: dict[str, Any] | None) -> dict[str, Any]:
    """The usage object of a response line; {} when it carries none."""
    body = response.get("body") if isinstance(response, dict) else None
    usage = body.get("usage") if isinstance(body, dict) else None
    return usage if isinstance(usage, dict) else {}


def usage_columns(usage: dict[str, Any]) -> dict[str, int]:
    """An OpenAI usage object (per line or per batch) as batch usage columns. Chat, completions
    and embeddings say prompt/completion tokens, the responses API says input/output tokens."""
    input_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    output_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    values = {
        "input_tokens": usage.get("prompt_tokens", usage.get("input_tokens")),
        "cached_tokens": input_details.get("cached_tokens") if isinstance(input_details, dict) else None,
        "output_tokens": usage.get("completion_tokens", usage.get("output_tokens")),
        "reasoning_tokens": (
            output_details.get("reasoning_tokens") if isinstance(output_details, dict) else None
        ),
    }
    return {column: value for column, value in values.items() if isinstance(value, int)}


def request_usage(usage: dict[str, Any], tokens: dict[str, int]) -> dict[str, int | None]:
    """A request's own usage columns, from its line's usage object and its usage columns."""
    prompt, completion = tokens.get("input_tokens"), tokens.get("output_tokens")
    total = usage.get("total_tokens") if isinstance(usage.get("total_tokens"), int) else None
    if total is None and prompt is not None:
        total = prompt + (completion or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
