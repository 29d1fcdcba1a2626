"""OpenAI's file and batch objects, and how a Batchgate batch reads as one.

Statuses: Batchgate's statuses say where the work is; OpenAI's also say whether the output files
exist. A batch that has ended but whose files FINISH has not written yet is still `finalizing`
(`cancelling` when cancelled), so a client that sees `completed` can always download its output.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec

from app.core.dropin.create import OPENAI_ORIGIN
from app.core.dropin.ids import PREFIX, public_batch_id
from app.core.read.dropin import DropinBatch
from app.core.rules.states import B
from app.db.models import Batch, BatchEvent, File

BATCH_ID = re.compile(re.escape(PREFIX[OPENAI_ORIGIN]) + r"([1-9][0-9]{0,17})")
# Ended statuses whose OpenAI name waits for the files: (before the files, after them).
ENDED: dict[str, tuple[str, str]] = {
    B.DONE: ("finalizing", "completed"),
    B.CANCELLED: ("cancelling", "cancelled"),
    B.EXPIRED: ("finalizing", "expired"),
}
RUNNING: dict[str, str] = {
    B.BUILDING: "validating",
    B.READY: "validating",
    B.SUBMITTING: "validating",
    B.PROCESSING: "in_progress",
    B.COLLECTING: "finalizing",
    B.CANCELLING: "cancelling",
    B.FAILED: "failed",
}


class FileOut(msgspec.Struct):
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    expires_at: int | None
    object: str = "file"
    status: str = "processed"
    status_details: str | None = None


class FileListOut(msgspec.Struct):
    data: list[FileOut]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: str = "list"


class FileDeletedOut(msgspec.Struct):
    id: str
    object: str = "file"
    deleted: bool = True


class BatchErrorOut(msgspec.Struct):
    code: str | None
    message: str | None
    param: str | None
    line: int | None


class BatchErrorsOut(msgspec.Struct):
    data: list[BatchErrorOut]
    object: str = "list"


class RequestCountsOut(msgspec.Struct):
    total: int
    completed: int
    failed: int


class InputDetailsOut(msgspec.Struct):
    cached_tokens: int


class OutputDetailsOut(msgspec.Struct):
    reasoning_tokens: int


class UsageOut(msgspec.Struct):
    input_tokens: int
    input_tokens_details: InputDetailsOut
    output_tokens: int
    output_tokens_details: OutputDetailsOut
    total_tokens: int


class BatchOut(msgspec.Struct):
    id: str
    object: str
    endpoint: str
    model: str
    errors: BatchErrorsOut | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCountsOut
    metadata: dict[str, Any] | None
    usage: UsageOut


class BatchListOut(msgspec.Struct):
    data: list[BatchOut]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: str = "list"


def unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def batch_number(public_id: str) -> int | None:
    """The batch id inside "batch_<n>", or None for anything else."""
    found = BATCH_ID.fullmatch(public_id)
    return int(found.group(1)) if found else None


def file_out(f: File) -> FileOut:
    return FileOut(f.id, f.bytes, unix(f.created_at) or 0, f.filename, f.purpose, unix(f.expires_at))


def status_of(batch: Batch) -> str:
    if batch.status in ENDED:
        before, after = ENDED[batch.status]
        return after if batch.files_written_at is not None else before
    return RUNNING.get(batch.status, "in_progress")


def batch_out(dropin: DropinBatch) -> BatchOut:
    b = dropin.batch
    status = status_of(b)
    usage = UsageOut(
        b.input_tokens,
        InputDetailsOut(b.cached_tokens),
        b.output_tokens,
        OutputDetailsOut(b.reasoning_tokens),
        b.input_tokens + b.output_tokens,
    )
    return BatchOut(
        id=public_batch_id(OPENAI_ORIGIN, b.id),
        object="batch",
        endpoint=b.endpoint,
        model=b.model,
        errors=_errors(b.error),
        input_file_id=b.dropin_input_file_id or "",
        completion_window=b.completion_window or "24h",
        status=status,
        output_file_id=b.dropin_output_file_id,
        error_file_id=b.dropin_error_file_id,
        created_at=unix(b.created_at) or 0,
        expires_at=unix(b.expires_at),
        request_counts=RequestCountsOut(b.request_count, b.completed_count, b.failed_count),
        metadata=b.face_metadata,
        usage=usage,
        **_phase_times(b, status, dropin.events),
    )


def _phase_times(b: Batch, status: str, events: list[BatchEvent]) -> dict[str, int | None]:
    """When the batch entered each OpenAI phase, from its timeline; terminal times only once
    the batch shows that terminal status."""
    first: dict[str, datetime] = {}
    for event in events:
        first.setdefault(event.to_status, event.at)
    finalizing = first.get(B.COLLECTING)
    if finalizing is None and b.status in (B.DONE, B.EXPIRED):
        finalizing = b.finished_at
    cancelling = first.get(B.CANCELLING) or (b.finished_at if b.status == B.CANCELLED else None)
    return {
        "in_progress_at": unix(first.get(B.PROCESSING) or b.submitted_at),
        "finalizing_at": unix(finalizing),
        "completed_at": unix(b.files_written_at) if status == "completed" else None,
        "failed_at": unix(b.finished_at) if status == "failed" else None,
        "expired_at": unix(b.finished_at) if status == "expired" else None,
        "cancelling_at": unix(cancelling),
        "cancelled_at": unix(b.files_written_at) if status == "cancelled" else None,
    }


def _errors(error: dict[str, Any] | None) -> BatchErrorsOut | None:
    """The batch's errors as OpenAI lists them: validation problems carry their lines; any other
    failure (a run that could not go on) becomes one entry."""
    if not error:
        return None
    data = error.get("data")
    items: list[Any] = data if isinstance(data, list) else [error]
    return BatchErrorsOut(
        [
            BatchErrorOut(
                _text(item.get("code")),
                _text(item.get("message") or item.get("detail") or item.get("last_error")),
                _text(item.get("param")),
                item.get("line") if isinstance(item.get("line"), int) else None,
            )
            for item in items
            if isinstance(item, dict)
        ]
    )


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None
