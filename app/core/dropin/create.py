"""Creating a drop-in batch: the user's file (or request list) becomes one batch with fixed
membership, its requests inserted with it in one transaction and never mixed with others.

An OpenAI input file is read once from disk, never held whole (openai_input.py): each chunk of
lines is validated and parsed in a worker thread while the one before it is inserted through
the driver (openai_rows.py). A problem on any line rolls the insert back and fails the batch
instead, listing every problem (as OpenAI does: per-line errors with line numbers). An Anthropic
request list is read twice (anthropic.py), with the builders below.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import owner_limits
from app.core.dropin import file_store, openai_rows
from app.core.dropin.openai_input import Checked, Line, Reader
from app.core.intake.accept import webhook_url_problem
from app.core.intake.schema import ENDPOINTS, with_default_model
from app.core.rules import routing, states
from app.core.rules.errors import InvalidInput, Problem
from app.core.rules.owners import ADMIN, Caller
from app.core.rules.states import B, R
from app.db.models import Batch, File, Request, table_of
from app.db.session import Database
from app.ground import metrics
from app.ground.clock import utcnow
from app.ground.config import Settings

OPENAI_ORIGIN, ANTHROPIC_ORIGIN = "openai_batch", "anthropic_batch"
DROPIN_ORIGINS = (OPENAI_ORIGIN, ANTHROPIC_ORIGIN)
COMPLETION_WINDOW = timedelta(hours=24)
INSERT_CHUNK = 1000
NO_DELIVERY = {"type": "none"}
# The batch metadata key that names the backend a drop-in batch runs on (else its model decides).
BACKEND_METADATA_KEY = "batchgate_backend"
# Where a drop-in batch's end is sent (its own completion webhook, app.core.announcements): this
# metadata key on the OpenAI face, the header WEBHOOK_HEADER on the Anthropic face.
WEBHOOK_METADATA_KEY = "batchgate_webhook_url"
WEBHOOK_HEADER = "batchgate-webhook-url"


def _backend(settings: Settings, model: str, metadata: dict[str, str] | None, failed: bool) -> str:
    """The backend a drop-in batch runs on: the one its metadata names (BACKEND_METADATA_KEY),
    else the first serving its model; InvalidInput when none can run it. A batch that fails on
    its file's problems never runs: it keeps the first backend's name."""
    chosen = (metadata or {}).get(BACKEND_METADATA_KEY)
    if failed:
        return routing.backend_for(settings, model) or settings.backends[0].name
    if problem := routing.refusal(settings, model, chosen, ""):
        pointer = "metadata/" + BACKEND_METADATA_KEY if problem.pointer == "/backend" else "input_file_id"
        raise InvalidInput(replace(problem, pointer=pointer))
    backend = chosen or routing.backend_for(settings, model)
    assert backend is not None  # refusal() said one serves it
    return backend


async def from_file(
    db: Database,
    settings: Settings,
    file: File,
    endpoint: str,
    metadata: dict[str, str] | None,
    output_expires_after: timedelta | None = None,
    *,
    caller: Caller = ADMIN,
) -> Batch:
    """An OpenAI-face batch of `caller`'s from an uploaded file: `ready` with its requests, or
    `failed` with every problem of the file in its error (`errors.data`). Its output and error
    files will live `output_expires_after` from their creation (OpenAI's 30 days when None).
    Its team's limits may refuse it (TooMany, Forbidden) before its file is read, on the size
    the upload recorded: then nothing is stored, even for a file that would fail validation."""
    if endpoint not in ENDPOINTS:
        raise InvalidInput(
            Problem(
                "invalid_endpoint",
                "Unsupported endpoint",
                f"endpoint must be one of {', '.join(ENDPOINTS)}.",
                "endpoint",
            )
        )
    if file.purpose != "batch":
        raise InvalidInput(
            Problem(
                "invalid_file",
                "Not a batch file",
                f"File {file.id} has purpose {file.purpose!r}, not 'batch'.",
                "input_file_id",
            )
        )
    check_webhook((metadata or {}).get(WEBHOOK_METADATA_KEY), settings, "metadata/" + WEBHOOK_METADATA_KEY)
    # Admitted on the size the upload recorded: its lines are read only once, below, and on
    # SQLite the check cannot run inside the insert's transaction (one connection).
    await owner_limits.admit(db, settings, caller, [file.bytes])
    made = _Making(db, settings, file, endpoint, metadata, output_expires_after, caller)
    reader = Reader(file_store.lines(settings.data_dir, file), endpoint, settings.local_default_model)
    with contextlib.closing(reader):
        # Parsing is CPU work: off the event loop. The first chunk names the batch's model.
        first = await asyncio.to_thread(reader.take, INSERT_CHUNK)
        refused: InvalidInput | None = None
        if not reader.failed:
            try:
                backend = _backend(settings, reader.checked.model or "unknown", metadata, False)
            except InvalidInput as exc:  # unless a line has a problem: then the batch fails
                refused = exc
        if not reader.failed and refused is None:
            with contextlib.suppress(_Invalid):
                return await made.ready(backend, reader, first)
        checked = await asyncio.to_thread(reader.finish)
    if refused is not None and not checked.errors:
        raise refused
    return await made.failed(checked)


class _Invalid(Exception):
    """A line with a problem was read while the batch's rows were being inserted: roll back."""


class _Making:
    """One OpenAI-face batch being created from `file`: ready, or failed by its problems."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        file: File,
        endpoint: str,
        metadata: dict[str, str] | None,
        output_expires_after: timedelta | None,
        caller: Caller,
    ) -> None:
        self.db, self.settings, self.file, self.endpoint = db, settings, file, endpoint
        self.metadata, self.output_expires_after, self.caller = metadata, output_expires_after, caller

    def _batch(self, status: str, backend: str, model: str) -> Batch:
        owner = self.caller.owner
        batch = new_batch(OPENAI_ORIGIN, backend, self.endpoint, model, self.metadata, status, owner=owner)
        batch.dropin_input_file_id = self.file.id
        if self.output_expires_after is not None:
            batch.dropin_output_expires_seconds = int(self.output_expires_after.total_seconds())
        return batch

    async def ready(self, backend: str, reader: Reader, first: list[Line]) -> Batch:
        """The batch with every line's request, in one transaction; _Invalid (rolled back) once a
        line has a problem."""
        async with self.db.transaction() as session:
            batch = self._batch(B.READY, backend, reader.checked.model or "unknown")
            session.add(batch)
            await session.flush()
            writer = await openai_rows.writer(session, batch)
            batch.request_count = await openai_rows.insert_all(writer, reader, first, INSERT_CHUNK)
            if reader.failed:
                raise _Invalid
            batch.bytes = reader.checked.bytes
            states.begin_batch(session, batch, f"created through /v1/batches from {self.file.id}")
        metrics.ACCEPTED.labels(OPENAI_ORIGIN).inc(batch.request_count)
        return batch

    async def failed(self, checked: Checked) -> Batch:
        """The batch failed with every problem of its file in its error (`errors.data`)."""
        model = checked.model or "unknown"
        async with self.db.transaction() as session:
            batch = self._batch(B.FAILED, _backend(self.settings, model, self.metadata, True), model)
            batch.bytes = checked.bytes
            batch.error = {"object": "list", "data": checked.errors}
            session.add(batch)
            await session.flush()
            states.begin_batch(session, batch, f"validation failed: {len(checked.errors)} problems")
        return batch


def check_webhook(url: str | None, settings: Settings, pointer: str) -> None:
    """Refuse (InvalidInput) a batch's own completion webhook that no delivery could go to."""
    if url is not None and (problem := webhook_url_problem(url, settings, pointer)) is not None:
        raise InvalidInput(problem)


def new_batch(
    origin: str,
    backend: str,
    endpoint: str,
    model: str,
    metadata: dict[str, str] | None,
    status: str = B.READY,
    *,
    owner: str = "",
) -> Batch:
    """A drop-in batch of `owner`'s as it is born: ready to run, or failed by its validation."""
    now = utcnow()
    return Batch(
        owner=owner,
        backend=backend,
        endpoint=endpoint,
        model=model,
        origin=origin,
        status=status,
        request_count=0,
        bytes=0,
        completed_count=0,
        failed_count=0,
        close_requested=False,
        run_failures=0,
        completion_window="24h",
        expires_at=now + COMPLETION_WINDOW,
        face_metadata=metadata,
        created_at=now,
        status_changed_at=now,
        ready_at=now if status == B.READY else None,
        finished_at=now if status == B.FAILED else None,
    )


def request_row(batch: Batch, scope: str, line: dict[str, Any], size: int) -> dict[str, Any]:
    """The requests row of one input line (custom_id, url, body) of the batch; a body without a
    model gets the batch's (the default model, as validation found)."""
    body = with_default_model(line["body"], batch.model)
    return {
        "scope": scope,
        "owner": batch.owner,
        "custom_id": line["custom_id"],
        "origin": batch.origin,
        "backend": batch.backend,
        "endpoint": line["url"],
        "model": body["model"],
        "body": body,
        "body_bytes": size,
        "delivery": NO_DELIVERY,
        "status": R.BATCHED,
        "batch_id": batch.id,
        "inference_attempts": 0,
        "resubmits": 0,
        "created_at": batch.created_at,
    }


async def insert_in_chunks(session: AsyncSession, rows: Iterator[dict[str, Any]]) -> int:
    """Insert INSERT_CHUNK rows at a time; reading and parsing each chunk runs off the event loop."""
    count = 0
    while chunk := await asyncio.to_thread(list, itertools.islice(rows, INSERT_CHUNK)):
        await session.execute(insert(table_of(Request)), chunk)
        count += len(chunk)
    return count
