"""The Anthropic face's answers (msgspec structs shaped as anthropic.types.messages declares them)
and the translation of a batch and of a request's result into them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

import msgspec

from app.api.anthropic.errors import body_for
from app.core.dropin.create import ANTHROPIC_ORIGIN
from app.core.dropin.ids import PREFIX, public_batch_id
from app.core.read.dropin import DropinBatch
from app.core.rules.errors import NotFound, Problem
from app.core.rules.states import BATCH_TERMINAL, B, R
from app.db.models import Batch, Request

ProcessingStatus = Literal["in_progress", "canceling", "ended"]
# Strict: a decimal batch id without sign, leading zeros or spaces; anything else is not ours.
BATCH_ID = re.compile(re.escape(PREFIX[ANTHROPIC_ORIGIN]) + r"([1-9][0-9]{0,17})")
_COUNT_OF: dict[str, str] = {
    R.SUCCEEDED: "succeeded",
    R.FAILED: "errored",
    R.CANCELLED: "canceled",
    R.EXPIRED: "expired",
}


class RequestCounts(msgspec.Struct):
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0


class MessageBatchOut(msgspec.Struct, kw_only=True):
    id: str
    type: Literal["message_batch"] = "message_batch"
    processing_status: ProcessingStatus
    request_counts: RequestCounts
    created_at: datetime
    ended_at: datetime | None
    expires_at: datetime | None
    archived_at: None = None  # results are kept until the batch is deleted, never archived
    cancel_initiated_at: datetime | None
    results_url: str | None


class MessageBatchListOut(msgspec.Struct):
    data: list[MessageBatchOut]
    has_more: bool
    first_id: str | None
    last_id: str | None


class DeletedMessageBatchOut(msgspec.Struct):
    id: str
    type: Literal["message_batch_deleted"] = "message_batch_deleted"


def public_id(batch_id: int) -> str:
    return public_batch_id(ANTHROPIC_ORIGIN, batch_id)


def batch_id_of(public: str) -> int:
    """The batch id inside `msgbatch_<n>`; NotFound for any other string."""
    match = BATCH_ID.fullmatch(public)
    if match is None:
        raise NotFound(Problem("not_found", "Not found", f"No message batch with id {public!r}."))
    return int(match.group(1))


def processing_status(batch: Batch) -> ProcessingStatus:
    """`ended` only once the FINISH step has seen the batch end; a cancel shows as `canceling`
    until then, as Anthropic shows it while it winds a batch down."""
    if batch.status == B.CANCELLING or (batch.status == B.CANCELLED and batch.files_written_at is None):
        return "canceling"
    if batch.status in BATCH_TERMINAL and batch.files_written_at is not None:
        return "ended"
    return "in_progress"


def message_batch(view: DropinBatch, results_base: str) -> MessageBatchOut:
    """The batch as a MessageBatch; `results_base` is the face's base URL the client came in on."""
    batch = view.batch
    counts = RequestCounts()
    for status, n in view.requests.items():
        name = _COUNT_OF.get(status, "processing")
        setattr(counts, name, getattr(counts, name) + n)
    status = processing_status(batch)
    ended = status == "ended"
    return MessageBatchOut(
        id=public_id(batch.id),
        processing_status=status,
        request_counts=counts,
        created_at=batch.created_at,
        ended_at=batch.finished_at if ended else None,
        expires_at=batch.expires_at,
        cancel_initiated_at=view.cancel_initiated_at,
        results_url=f"{results_base}/messages/batches/{public_id(batch.id)}/results" if ended else None,
    )


def result_line(request: Request) -> dict[str, Any]:
    """One line of the results file: {custom_id, result} as MessageBatchIndividualResponse."""
    result: dict[str, Any]
    if request.status == R.SUCCEEDED and request.response is not None:
        result = {"type": "succeeded", "message": request.response.get("body")}
    elif request.status == R.CANCELLED:
        result = {"type": "canceled"}
    elif request.status == R.EXPIRED:
        result = {"type": "expired"}
    else:
        result = {"type": "errored", "error": _error_of(request)}
    return {"custom_id": request.custom_id, "result": result}


def _error_of(request: Request) -> dict[str, Any]:
    """A failed request's error as Anthropic's ErrorResponse: the server's HTTP status picks the
    type when it answered; a request refused before any call (unsupported content) is invalid;
    anything else (timeout, connection, a line that never finished) is Anthropic's api_error."""
    error = request.error or {}
    message = str(error.get("message") or "The request did not complete.")
    response = request.response or {}
    status = response.get("status_code")
    if isinstance(status, int) and status >= 400:
        body = body_for(status, message)
    else:
        body = body_for(400 if error.get("code") == "invalid_request" else 500, message)
    if response.get("request_id"):
        body["request_id"] = response["request_id"]
    return body
