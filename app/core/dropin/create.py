"""Creating a drop-in batch: the user's file (or request list) becomes one batch with fixed
membership, its requests inserted with it in one transaction and never mixed with others.

An OpenAI input file is read twice from disk, never held whole: once to validate every line
(as OpenAI does: per-line errors with line numbers fail the batch), once to insert in chunks.
An Anthropic request list is read the same way (anthropic.py), with the builders below.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import owner_limits
from app.core.dropin import file_store
from app.core.intake.accept import webhook_url_problem
from app.core.intake.schema import CUSTOM_ID_MAX_CHARS, ENDPOINTS, MODEL_MAX_CHARS, with_default_model
from app.core.rules import routing, states, storable
from app.core.rules.errors import InvalidInput, Problem
from app.core.rules.owners import ADMIN, Caller
from app.core.rules.states import B, R, batch_scope
from app.db.models import Batch, File, Request, table_of
from app.db.session import Database
from app.ground import jsontext, metrics
from app.ground.clock import utcnow
from app.ground.config import Settings

OPENAI_ORIGIN, ANTHROPIC_ORIGIN = "openai_batch", "anthropic_batch"
DROPIN_ORIGINS = (OPENAI_ORIGIN, ANTHROPIC_ORIGIN)
MAX_LINES = 50_000
# OpenAI's cap on an embeddings batch: 50,000 embedding inputs across all its requests.
EMBEDDINGS, MAX_EMBEDDING_INPUTS = "/v1/embeddings", 50_000
MAX_ERRORS_LISTED = 1000
COMPLETION_WINDOW = timedelta(hours=24)
INSERT_CHUNK = 1000
NO_DELIVERY = {"type": "none"}
# The batch metadata key that names the backend a drop-in batch runs on (else its model decides).
BACKEND_METADATA_KEY = "batchgate_backend"
# Where a drop-in batch's end is sent (its own completion webhook, app.core.announcements): this
# metadata key on the OpenAI face, the header WEBHOOK_HEADER on the Anthropic face.
WEBHOOK_METADATA_KEY = "batchgate_webhook_url"
WEBHOOK_HEADER = "batchgate-webhook-url"
TOO_LONG = "string_above_max_length"  # OpenAI's own code for a string past its limit


@dataclass
class Checked:
    """What validating an input file found: its one model, its size, and every problem."""

    model: str | None = None
    default_model: str | None = None
    lines: int = 0
    bytes: int = 0
    embedding_inputs: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def refuse(self, line: int, code: str, message: str, param: str | None = None) -> None:
        if len(self.errors) < MAX_ERRORS_LISTED:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})


def check_lines(raw_lines: Iterator[bytes], endpoint: str, default_model: str | None = None) -> Checked:
    """Validate an OpenAI batch input file line by line, keeping only the custom_ids seen. A line
    without body.model runs on `default_model` (LOCAL_DEFAULT_MODEL) when there is one."""
    checked, seen = Checked(default_model=default_model), set[str]()
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        checked.lines += 1
        checked.bytes += len(raw)
        if checked.lines > MAX_LINES:
            checked.refuse(number, "too_many_requests", f"A batch holds at most {MAX_LINES} requests.")
            break
        _check_line(checked, seen, number, raw, endpoint)
        if checked.embedding_inputs > MAX_EMBEDDING_INPUTS:
            message = f"An embeddings batch holds at most {MAX_EMBEDDING_INPUTS} inputs across its requests."
            checked.refuse(number, "too_many_embedding_inputs", message, "body.input")
            break
    if checked.lines == 0:
        checked.refuse(1, "empty_file", "The input file has no requests.")
    return checked


def _check_line(checked: Checked, seen: set[str], number: int, raw: bytes, endpoint: str) -> None:
    try:
        line = jsontext.strict_loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        return checked.refuse(number, "invalid_json_line", "This line is not parsable as valid JSON.")
    if not isinstance(line, dict):
        return checked.refuse(number, "invalid_json_line", "This line is not a JSON object.")
    if (pointer := storable.first_unstorable(raw, line)) is not None:
        return checked.refuse(
            number, "invalid_text", storable.UNSTORABLE, pointer.lstrip("/").replace("/", ".")
        )
    if endpoint == EMBEDDINGS:
        checked.embedding_inputs += embedding_inputs(line.get("body"))
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return checked.refuse(number, "missing_required_parameter", "custom_id is required.", "custom_id")
    if len(custom_id) > CUSTOM_ID_MAX_CHARS:
        return checked.refuse(
            number, TOO_LONG, f"custom_id is longer than {CUSTOM_ID_MAX_CHARS} characters.", "custom_id"
        )
    if custom_id in seen:
        checked.refuse(
            number,
            "duplicate_custom_id",
            "The custom_id for this request is a duplicate of another request; it must be unique "
            "within the batch.",
            "custom_id",
        )
    seen.add(custom_id)
    if line.get("method", "POST") != "POST":
        checked.refuse(number, "invalid_method", "Only POST is supported.", "method")
    if line.get("url") != endpoint:
        checked.refuse(
            number,
            "mismatched_endpoint",
            f"The url of this request is not the batch's endpoint {endpoint}.",
            "url",
        )
    body = with_default_model(line.get("body"), checked.default_model)
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        return checked.refuse(number, "missing_required_parameter", "body.model is required.", "body.model")
    if len(model) > MODEL_MAX_CHARS:
        # Not kept as the batch's model either: the batches table holds no longer name.
        return checked.refuse(
            number, TOO_LONG, f"body.model is longer than {MODEL_MAX_CHARS} characters.", "body.model"
        )
    if checked.model is None:
        checked.model = model
    elif model != checked.model:
        checked.refuse(
            number,
            "mismatched_model",
            f"The model {model!r} differs from {checked.model!r}; a batch holds requests for one model.",
            "body.model",
        )
    return None


def embedding_inputs(body: Any) -> int:
    """How many embedding inputs a body's `input` holds, as OpenAI counts them: a string or one
    token array is one, a list of strings or of token arrays one per item. Anything else counts
    nothing here; the server refuses it when the line runs."""
    value = body.get("input") if isinstance(body, dict) else None
    if isinstance(value, str):
        return 1
    if not isinstance(value, list) or not value:
        return 0
    return 1 if all(isinstance(x, int) for x in value) else len(value)


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
    Its team's limits may refuse it (TooMany, Forbidden) before anything is stored."""
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
    # Reading and parsing up to 200 MB is CPU work: off the event loop.
    checked = await asyncio.to_thread(
        check_lines, file_store.lines(settings.data_dir, file), endpoint, settings.local_default_model
    )
    model = checked.model or "unknown"
    backend = _backend(settings, model, metadata, bool(checked.errors))
    if not checked.errors:
        await owner_limits.admit(db, settings, caller, [checked.bytes])
    async with db.transaction() as session:
        status = B.FAILED if checked.errors else B.READY
        batch = new_batch(OPENAI_ORIGIN, backend, endpoint, model, metadata, status, owner=caller.owner)
        batch.dropin_input_file_id = file.id
        if output_expires_after is not None:
            batch.dropin_output_expires_seconds = int(output_expires_after.total_seconds())
        batch.bytes = checked.bytes
        if checked.errors:
            batch.error = {"object": "list", "data": checked.errors}
        session.add(batch)
        await session.flush()
        if checked.errors:
            states.begin_batch(session, batch, f"validation failed: {len(checked.errors)} problems")
            return batch
        scope = batch_scope(batch.id)
        rows = (
            request_row(batch, scope, json.loads(raw), len(raw))
            for raw in file_store.lines(settings.data_dir, file)
            if raw.strip()
        )
        batch.request_count = await insert_in_chunks(session, rows)
        states.begin_batch(session, batch, f"created through /v1/batches from {file.id}")
    metrics.ACCEPTED.labels(OPENAI_ORIGIN).inc(batch.request_count)
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
