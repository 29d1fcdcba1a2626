"""An Anthropic request list ({"requests": [{custom_id, params}, ...]}) becomes a drop-in batch
without ever being held whole: decoded at once, a body of up to 256 MB becomes Python objects
2-3 times its size (far more when its values are many and small). The body is spooled to
DATA_DIR/tmp as it arrives, then parsed incrementally (ijson) twice: once to validate every
entry, keeping only the custom_ids seen, once to insert the rows INSERT_CHUNK at a time in one
transaction. Both passes run off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import ijson
from sqlalchemy import func, select

from app.core.dropin import file_store
from app.core.dropin.anthropic_params import params_problems
from app.core.dropin.anthropic_params import refused as _refused
from app.core.dropin.create import (
    ANTHROPIC_ORIGIN,
    WEBHOOK_METADATA_KEY,
    insert_in_chunks,
    new_batch,
    request_row,
)
from app.core.intake.schema import with_default_model
from app.core.rules import states, storable
from app.core.rules.errors import InvalidInput, MalformedInput, Problem
from app.core.rules.states import batch_scope
from app.core.runs.lines import input_line
from app.db.models import Batch, Request
from app.db.session import Database
from app.formats.anthropic_messages import MESSAGES_URL as MESSAGES_ENDPOINT
from app.ground import metrics

MAX_REQUESTS = 100_000
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
ENTRY = "requests.item"  # ijson's prefix of an entry of the top-level requests list
OPENS, CLOSES = frozenset({"start_map", "start_array"}), frozenset({"end_map", "end_array"})
# ijson's prefixed events keep the path to every open value, so their memory grows with depth
# times key length: 200 kB of "[" took 23 GB. The body is held to these before it is parsed so.
MAX_DEPTH, MAX_KEY_CHARS = 128, 1024

Event = tuple[str, str, Any]


@dataclass
class Shape:
    """The body's top level, noted as its events go by: its first event (start_map for an
    object) and the first event of each value of its `requests` key (start_array for a list)."""

    top: str | None = None
    requests: list[str] = field(default_factory=list)
    lookalike: bool = False  # another top-level key starts with "requests." (see _rows)


@dataclass
class Listed:
    """What validating the list found: its entries, their models (two at most), every problem."""

    count: int = 0
    models: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)


async def from_body(
    db: Database,
    data_dir: str,
    body: AsyncIterator[bytes],
    max_bytes: int,
    default_model: str | None,
    backend_of: Callable[[str], str],
    webhook_url: str | None = None,
    *,
    owner: str = "",
    admit: Callable[[int], Awaitable[None]] | None = None,
) -> Batch:
    """An Anthropic-face batch from its request list, read as the body arrives. Every problem
    refuses the whole list and nothing is created: MalformedInput (not JSON), InvalidInput (every
    problem of every entry), TooLarge (past `max_bytes`, the rest of the body unread). An entry
    whose params name no model runs on `default_model` (LOCAL_DEFAULT_MODEL) when there is one.
    `backend_of` names the backend for the batch's model (InvalidInput when none can run it).
    `webhook_url`, checked by the caller, is where its end is announced (app.core.announcements).
    The batch is `owner`'s; `admit` may refuse the list's size (its team's limits) before it is
    stored."""
    async with file_store.spooled(data_dir, body, max_bytes) as path:
        model, shape = await asyncio.to_thread(check, path, default_model)
        backend = backend_of(model)
        if admit is not None:
            await admit(path.stat().st_size)
        with path.open("rb") as source:
            async with db.transaction() as session:
                # Its own webhook is kept where an OpenAI-face batch's metadata names it.
                own = {WEBHOOK_METADATA_KEY: webhook_url} if webhook_url else None
                batch = new_batch(ANTHROPIC_ORIGIN, backend, MESSAGES_ENDPOINT, model, own, owner=owner)
                session.add(batch)
                await session.flush()
                rows = _rows(source, batch, shape, default_model)
                batch.request_count = await insert_in_chunks(session, rows)
                # Its size, as an OpenAI batch's is its input file's: the lines it runs.
                batch.bytes = await session.scalar(
                    select(func.coalesce(func.sum(Request.body_bytes), 0)).where(Request.batch_id == batch.id)
                )
                states.begin_batch(session, batch, "created through /v1/messages/batches")
    metrics.ACCEPTED.labels(ANTHROPIC_ORIGIN).inc(batch.request_count)
    return batch


def check(path: Path, default_model: str | None = None) -> tuple[str, Shape]:
    """Validate the request list at `path` as a whole; returns its model ("several" when the
    entries name more than one) and the body's shape. Raises with every problem found."""
    shape, listed = _scan(path, default_model)
    if shape.top != "start_map" or shape.requests[:1] != ["start_array"]:
        raise InvalidInput(_refused("Missing requests", "requests must be a list of requests.", "/requests"))
    if len(shape.requests) > 1:
        raise InvalidInput(_refused("Duplicate requests", "requests is given more than once.", "/requests"))
    problems = []
    if not listed.count:
        problems.append(_refused("No requests", "requests must hold at least one request.", "/requests"))
    if listed.count > MAX_REQUESTS:
        limit = f"A batch holds at most {MAX_REQUESTS} requests."
        problems.append(_refused("Too many requests", limit, "/requests"))
    if problems or listed.problems:
        raise InvalidInput(*problems, *listed.problems)
    return (listed.models.pop() if len(listed.models) == 1 else "several"), shape


def _scan(path: Path, default_model: str | None) -> tuple[Shape, Listed]:
    """One pass over the body: its shape, and the problems of its first MAX_REQUESTS entries."""
    shape, listed, seen = Shape(), Listed(), set[str]()
    try:
        with path.open("rb") as source:
            _within_bounds(source)
        with path.open("rb") as source:
            for index, given in enumerate(_entries(source, shape)):
                entry = _with_default_model(given, default_model)
                listed.count += 1
                if index >= MAX_REQUESTS:
                    continue  # counted, not checked: the list is refused for its length anyway
                found = _entry_problems(f"/requests/{index}", entry, seen)
                listed.problems += found
                if not found and len(listed.models) < 2:
                    listed.models.add(entry["params"]["model"])
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        detail = f"The body is not JSON: {_reason(exc)}"
        raise MalformedInput(Problem("invalid_request", "Body is not JSON", detail)) from exc
    return shape, listed


def _within_bounds(source: IO[bytes]) -> None:
    """Refuse a body nested deeper than MAX_DEPTH or with a key longer than MAX_KEY_CHARS, read
    with ijson's plain events (no paths kept): about half the cost of the checking pass."""
    depth = 0
    for kind, value in ijson.basic_parse(source):
        if kind in OPENS:
            depth += 1
            if depth > MAX_DEPTH:
                detail = f"The body's JSON is nested more than {MAX_DEPTH} levels deep."
                raise MalformedInput(Problem("invalid_request", "Body nested too deeply", detail))
        elif kind in CLOSES:
            depth -= 1
        elif kind == "map_key" and len(value) > MAX_KEY_CHARS:
            detail = f"An object key is longer than {MAX_KEY_CHARS} characters."
            raise MalformedInput(Problem("invalid_request", "Key too long", detail))


def _entries(source: IO[bytes], shape: Shape) -> Iterator[Any]:
    """The entries of the body's request list, one at a time; numbers with a fraction are
    floats (ijson's default, Decimal, would not store as JSON)."""
    entries: Iterator[Any] = ijson.items(_entry_events(ijson.parse(source, use_float=True), shape), ENTRY)
    return entries


def _entry_events(events: Iterator[Event], shape: Shape) -> Iterator[Event]:
    """Only the events inside the top-level object's first `requests` list, noting `shape`.

    Prefixes alone are ambiguous (a top-level key "requests.item" has an entry's prefix), so the
    depth tells the top-level keys; inside the list, every event's prefix is longer than
    "requests" but that of the list's own end, so no depth is counted there (the hot path)."""
    depth, key = 0, None
    for _, kind, value in events:
        if depth == 0:
            shape.top = kind
        elif depth == 1 and kind == "map_key":
            key = value
            shape.lookalike = shape.lookalike or value.startswith("requests.")
            continue
        elif depth == 1 and key == "requests":  # this event starts the value of "requests"
            key = None
            shape.requests.append(kind)
            if kind == "start_array" and len(shape.requests) == 1:
                for event in events:
                    if event[0] == "requests":
                        break
                    yield event
                continue
        if kind in OPENS:
            depth += 1
        elif kind in CLOSES:
            depth -= 1


def _entry_problems(where: str, entry: Any, seen: set[str]) -> list[Problem]:
    """What is wrong with one {custom_id, params} of an Anthropic request list."""
    problems = []
    custom_id = entry.get("custom_id") if isinstance(entry, dict) else None
    params = entry.get("params") if isinstance(entry, dict) else None
    if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
        rule = "custom_id must be 1-64 characters of [A-Za-z0-9_-]."
        problems.append(_refused("Invalid custom_id", rule, where + "/custom_id"))
    elif custom_id in seen:
        twice = f"custom_id {custom_id!r} is used twice."
        problems.append(_refused("Duplicate custom_id", twice, where + "/custom_id"))
    else:
        seen.add(custom_id)
    if not isinstance(params, dict):
        return [*problems, _refused("Missing params", "params is required.", where + "/params")]
    if (pointer := storable.first_unstorable_in(params, where + "/params")) is not None:
        problems.append(_refused("Text that cannot be stored", storable.UNSTORABLE, pointer))
    return problems + params_problems(params, where + "/params")


def _with_default_model(entry: Any, default_model: str | None) -> Any:
    """The entry with its params' model defaulted (see with_default_model)."""
    if isinstance(entry, dict) and isinstance(entry.get("params"), dict):
        return {**entry, "params": with_default_model(entry["params"], default_model)}
    return entry


def _rows(
    source: IO[bytes], batch: Batch, shape: Shape, default_model: str | None
) -> Iterator[dict[str, Any]]:
    """The requests rows of the (validated) list, one entry parsed at a time."""
    scope = batch_scope(batch.id)
    # Validated, the list is the only top-level "requests"; unless another key looks like its
    # path ("requests.item"), ijson's prefix alone finds the entries, in C: about 3x faster.
    entries = _entries(source, Shape()) if shape.lookalike else ijson.items(source, ENTRY, use_float=True)
    for entry in entries:
        custom_id, params = entry["custom_id"], with_default_model(entry["params"], default_model)
        line = {"custom_id": custom_id, "url": MESSAGES_ENDPOINT, "body": params}
        yield request_row(batch, scope, line, len(input_line(custom_id, MESSAGES_ENDPOINT, params)))


def _reason(exc: Exception) -> str:
    """The first line of the parser's message (the rest quotes the body around the error)."""
    reason = exc.args[0] if exc.args else ""
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return str(reason).strip().splitlines()[0] if str(reason).strip() else type(exc).__name__
