"""Bulk intake: many requests in one body (a JSON array or JSONL), each checked exactly as
`POST /api/requests` checks it, the valid ones stored in chunks and every item answered in order.

Speed comes from not running the full pydantic model on the common shape: `_quick` accepts an
item only when it can prove `accept.validate` would accept it (a strict subset: anything unusual
goes to `validate` itself, which also writes every problem), checks each distinct delivery
config once per body, and measures the batch line from msgspec's encoding when that is provably
the same length as `input_line`'s. Storing is in bulk_chunks (a chunk stored while the next
is checked) and bulk_store (the SQL).
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec

from app.core import owner_limits
from app.core.intake import bulk_chunks, bulk_store, usual
from app.core.intake.accept import route, validate, validate_delivery_config
from app.core.intake.bulk_chunks import ItemResult
from app.core.intake.schema import MODEL_MAX_CHARS, stored_config
from app.core.rules import routing, storable
from app.core.rules.errors import InvalidInput, MalformedInput, Problem, TooLarge
from app.core.rules.owners import ADMIN, Caller
from app.db.session import Database
from app.ground import jsontext, sealing
from app.ground.config import Settings

# Rows per transaction: big enough that a statement's fixed cost is nothing per row, small enough
# that a failure midway loses little work and other writers get a turn between chunks.
CHUNK = 5000
# The first chunk is smaller, so that the database starts sooner: until it does, nothing overlaps.
_FIRST_CHUNK = 1000
# Items checked between two turns of the event loop while a chunk is being stored: each turn lets
# its store take its next step (a round trip to the database), about a millisecond of checking.
_YIELD_EVERY = 100

_encode = msgspec.json.encode
_new_row = tuple.__new__


@dataclass(slots=True)
class BulkOutcome:
    results: list[ItemResult]

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.results if r.id is not None)

    @property
    def rejected(self) -> int:
        return len(self.results) - self.accepted


# -- decoding -----------------------------------------------------------------------------------


class _Pauses:
    held = 0  # bodies inside gc_paused now (they overlap: the pause spans awaits)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection inside. Decoding and checking 50,000 items makes some 400,000
    containers; left to the collector they set off collection after collection, each walking
    them all again (3 of every 4 seconds of a decode went there). Pausing only around the
    decode and the check still cost a fifth of the CPU: the first collection after each pause
    walked every item still alive. So the pause spans a body's whole handling, storing too
    (awaits included: other requests meanwhile run without collection for a second or two,
    which only delays freeing their cycles), and ends after the items were let go, when little
    is left to walk. Nothing here makes reference cycles. Re-entrant across overlapping bodies;
    left alone when something else turned collection off. (Freezing the items instead measured no
    faster, and gc.unfreeze would also undo what `batchgate serve` froze at start.)"""
    if not _Pauses.held and not gc.isenabled():
        yield
        return
    _Pauses.held += 1
    gc.disable()
    try:
        yield
    finally:
        _Pauses.held -= 1
        if not _Pauses.held:
            gc.enable()


async def accept_body(
    db: Database, settings: Settings, raw: bytes, jsonl: bool, max_items: int, caller: Caller = ADMIN
) -> BulkOutcome:
    """Decode a bulk body (JSONL or a JSON array of at most `max_items` requests) and accept
    its items as `caller`'s (see accept_all); whole-body errors (decode_array, decode_lines)
    store nothing."""
    with gc_paused():
        items = decode_lines(raw, max_items) if jsonl else decode_array(raw, max_items)
        outcome = await accept_all(db, settings, items, raw, caller)
        del items  # freed here, by reference counting, before collection resumes
    return outcome


def decode_array(raw: bytes, max_items: int) -> list[Any]:
    """A JSON array body as its items; 400 (with the line) when it is not JSON, 422 when not an
    array, 413 when it has more than `max_items` items. Nothing is stored on any of these."""
    with gc_paused():
        data = _decode(raw, 1)
    if not isinstance(data, list):
        raise InvalidInput(
            Problem("not_an_array", "Body is not an array", "Send a JSON array of requests (or JSONL).", "")
        )
    _check_count(len(data), max_items)
    return data


def decode_lines(raw: bytes, max_items: int) -> list[Any]:
    """A JSONL body as its items, one a line (blank lines skipped); 400 naming the first line
    that is not JSON, 413 when it has more than `max_items` items (counted before decoding)."""
    lines = raw.split(b"\n")
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    _check_count(len(numbered), max_items)
    with gc_paused():
        return [_decode(line, n) for n, line in numbered]


def _check_count(count: int, max_items: int) -> None:
    if count > max_items:
        raise TooLarge(
            Problem(
                "too_many_items",
                "Too many items",
                f"The body holds {count} requests; one bulk body may hold {max_items} "
                "(API_BULK_MAX_ITEMS). Split it.",
                "",
            )
        )


def _decode(raw: bytes, first_line: int) -> Any:
    """msgspec first (fast); the standard library decides when msgspec refuses, so that what
    single intake reads (a lone surrogate escape, refused later per item) reads the same here,
    and its error gives the line. NaN and Infinity are not JSON and are refused."""
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        return jsontext.strict_loads(raw)
    except json.JSONDecodeError as exc:
        line = first_line + exc.lineno - 1
        raise MalformedInput(
            Problem("invalid_json", "Body is not JSON", f"Line {line} is not valid JSON: {exc.msg}.", "")
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedInput(
            Problem("invalid_json", "Body is not JSON", f"Line {first_line} is not valid JSON: {exc}.", "")
        ) from None
    except RecursionError:
        raise MalformedInput(
            Problem("invalid_json", "Body nested too deeply", f"Line {first_line} is nested too deeply.", "")
        ) from None


# -- checking -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Checker:
    """Checks the items of one body, remembering what repeats across them (delivery configs,
    model routes, custom_ids seen)."""

    settings: Settings
    suspect: bool  # the body holds text that may not be storable: walk each item
    deliveries: dict[bytes, str | None] = field(default_factory=dict)
    backends: dict[str, str | None] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    usable: frozenset[str] = field(init=False)
    sealer: sealing.Sealer = field(init=False)
    max_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.usable = routing.usable_backends(self.settings)
        self.max_bytes = self.settings.batch_max_bytes
        self.sealer = sealing.sealer(self.settings.secrets_key)

    def check(self, index: int, item: Any) -> bulk_store.Row | ItemResult:
        """The row to store, or the item's rejection."""
        quick = None if self.suspect else self._quick(item)
        row = self._slow(index, item) if quick is None else quick
        if isinstance(row, ItemResult):
            return row
        if (first := self.seen.setdefault(row.custom_id, index)) != index:
            return ItemResult(index, row.custom_id, problems=(_repeated(row.custom_id, first, f"/{index}"),))
        return row

    def _slow(self, index: int, item: Any) -> bulk_store.Row | ItemResult:
        """An item `_quick` did not vouch for (or any item of a suspect body)."""
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        custom_id = custom_id if isinstance(custom_id, str) else None
        prefix = f"/{index}"
        if self.suspect:
            if (pointer := storable.first_unstorable_in(item)) is not None:
                problem = Problem(
                    "invalid_text", "Text that cannot be stored", storable.UNSTORABLE, prefix + pointer
                )
                return ItemResult(index, custom_id, problems=(problem,))
            if (row := self._quick(item)) is not None:
                return row
        try:
            return self._full(item, prefix)
        except InvalidInput as exc:
            return ItemResult(index, custom_id, problems=tuple(exc.problems))

    def _quick(self, item: Any) -> bulk_store.Row | None:
        """The row of an item of the usual shape that `validate` would surely accept; None when
        in any doubt (then `_full` decides and explains). Runs once an item: every step counts."""
        if (shape := usual.head(item)) is None:
            return None
        custom_id, url, body = shape
        model, backend = body.get("model"), item.get("backend")
        if type(model) is not str or not 0 < len(model) <= MODEL_MAX_CHARS:
            return None
        if backend is None:
            if model not in self.backends:
                self.backends[model] = routing.backend_for(self.settings, model)
            backend = self.backends[model]
        elif type(backend) is not str:
            return None
        # An unknown or unconfigured backend, or no backend at all: the full check says why.
        if backend is None or backend not in self.usable:
            return None
        delivery = self._delivery(item.get("delivery_config"))
        body_json = _encode(body)
        size = _line_bytes(custom_id, url, body_json)
        if delivery is None or size > self.max_bytes:
            return None
        # tuple.__new__ spares NamedTuple's own __new__, a Python function.
        return _new_row(
            bulk_store.Row, (custom_id, backend, url, model, body_json.decode(), size, delivery, None, body)
        )

    def _delivery(self, config: Any) -> str | None:
        """The stored JSON of a valid delivery config, checked once per distinct config."""
        if type(config) is not dict and type(config) is not list:
            return None
        key = _encode(config)
        if key not in self.deliveries:
            try:
                stored = validate_delivery_config(config, self.settings)
            except InvalidInput:
                self.deliveries[key] = None
            else:
                # Header values sealed once per distinct config (SECRETS_KEY), as accept does.
                self.deliveries[key] = _encode(self.sealer.seal_headers(stored)).decode()
        return self.deliveries[key]

    def _full(self, item: Any, prefix: str) -> bulk_store.Row:
        """The row by the very checks of single intake (raises InvalidInput with every problem)."""
        request = validate(item, self.settings, prefix)
        delivery = _encode(self.sealer.seal_headers(stored_config(request.delivery_config))).decode()
        body = request.body_dict
        return bulk_store.Row(
            request.custom_id,
            route(request, self.settings),
            request.url,
            request.body.model,
            _encode(body).decode(),
            request.line_bytes,
            delivery,
            request.complete_by,
            body,
        )


def _line_bytes(custom_id: str, url: str, body_json: bytes) -> int:
    """len(input_line(custom_id, url, body).encode()) from the body's JSON: the line is msgspec's
    JSON (app.ground.jsontext) of its parts, put together."""
    # {"custom_id":<id>,"method":"POST","url":"<url>","body":<body>}
    return 47 + len(_encode(custom_id)) + len(url.encode()) + len(body_json)


def _repeated(custom_id: str, first: int, prefix: str) -> Problem:
    return Problem(
        "duplicate_custom_id",
        "Duplicate custom_id",
        f"custom_id {custom_id!r} is already used by item {first} of this body; the first is kept.",
        prefix + "/custom_id",
    )


# -- storing ------------------------------------------------------------------------------------


async def accept_all(
    db: Database, settings: Settings, items: list[Any], raw: bytes, caller: Caller = ADMIN
) -> BulkOutcome:
    """Check every item, store the valid ones as pending (CHUNK rows a transaction, see
    bulk_chunks for what a failure midway answers) and answer each item in input order. `raw`
    is the body the items were decoded from; `items` is emptied as they are checked.

    A chunk is stored while the items after it are checked; the event loop gets a turn every
    _YIELD_EVERY items so that its store makes progress. A team with limits is the exception:
    `owner_limits.admit` takes the body whole or refuses it whole (nothing stored), so every item
    is checked before anything is stored."""
    checker = _Checker(settings, suspect=storable.first_unstorable(raw, items) is not None)
    results: list[ItemResult | None] = [None] * len(items)
    whole = await owner_limits.limited(db, caller)
    chunks = bulk_chunks.Chunks(db, caller, checker.sealer.open_headers, results)
    rows: bulk_chunks.Chunk = []  # checked, not yet handed to `chunks`
    try:
        for index, item in enumerate(items):
            checked = checker.check(index, item)
            # Let go of the item: what is left of it (a row's body) goes with its chunk once stored,
            # freed here while the database works rather than all at once before the answer.
            items[index] = None
            if isinstance(checked, ItemResult):
                results[index] = checked
            else:
                rows.append((index, checked))
                if not whole and len(rows) == (CHUNK if chunks.started else min(CHUNK, _FIRST_CHUNK)):
                    await chunks.put(rows)
                    rows = []
            if index % _YIELD_EVERY == 0 and chunks.busy:
                await asyncio.sleep(0)
        if whole:
            await owner_limits.admit(db, settings, caller, [row.body_bytes for _, row in rows])
        for start in range(0, len(rows), CHUNK):
            await chunks.put(rows[start : start + CHUNK])
        await chunks.finish()
    finally:
        await chunks.close()
    return BulkOutcome([r for r in results if r is not None])
