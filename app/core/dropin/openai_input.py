"""Reading an OpenAI batch input file once: every line validated as OpenAI does (per-line errors
with line numbers fail the batch), the valid lines handed over in chunks to be stored as they
are read, never the whole file in memory.

Once a line has a problem no more lines are handed over (the batch will fail, and what was
stored is rolled back), but the rest is still validated: the failed batch lists every problem.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from app.core.intake.schema import CUSTOM_ID_MAX_CHARS, MODEL_MAX_CHARS, with_default_model
from app.core.rules import storable
from app.ground import jsontext

MAX_LINES = 50_000
# OpenAI's cap on an embeddings batch: 50,000 embedding inputs across all its requests.
EMBEDDINGS, MAX_EMBEDDING_INPUTS = "/v1/embeddings", 50_000
MAX_ERRORS_LISTED = 1000
TOO_LONG = "string_above_max_length"  # OpenAI's own code for a string past its limit

_decode = msgspec.json.Decoder().decode


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


class Line(NamedTuple):
    """A valid line as it is stored: its columns, the body as JSON text (its model filled in)."""

    custom_id: str
    url: str
    model: str
    body_json: str
    size: int  # the line's bytes, as read


class Reader:
    """One pass over an input file's lines (bytes, as read), for one endpoint. A line without
    body.model runs on `default_model` (LOCAL_DEFAULT_MODEL) when there is one. Not thread-safe:
    one `take` or `finish` at a time (each runs in a worker thread: parsing is CPU work)."""

    def __init__(self, raw_lines: Iterator[bytes], endpoint: str, default_model: str | None = None) -> None:
        self.checked = Checked(default_model=default_model)
        self._raw_lines = raw_lines
        self._numbered = enumerate(raw_lines, start=1)
        self._endpoint = endpoint
        self._seen: set[str] = set()
        self._ended = False

    def close(self) -> None:
        """Close the lines' source (a generator holding the file open), if it can be closed."""
        close = getattr(self._raw_lines, "close", None)
        # ValueError: a worker thread is still reading it (this task was cancelled meanwhile);
        # the generator closes the file when it is collected instead.
        with contextlib.suppress(ValueError):
            if close is not None:
                close()

    @property
    def failed(self) -> bool:
        return bool(self.checked.errors)

    def take(self, count: int) -> list[Line]:
        """Up to `count` more valid lines; fewer at the end of the file, none once a problem
        was found (then `finish` validates the rest)."""
        taken: list[Line] = []
        while not self.failed and len(taken) < count and (line := self._next()) is not False:
            if isinstance(line, Line):
                taken.append(line)
        return [] if self.failed else taken

    def finish(self) -> Checked:
        """Validate every line not read yet (keeping nothing but the problems); what was found."""
        while self._next() is not False:
            pass
        return self.checked

    def _next(self) -> Line | bool:
        """The next line: a Line if valid, True if blank or not valid, False past the end."""
        if self._ended:
            return False
        number, raw = next(self._numbered, (0, b""))
        if not number:
            return self._end()
        if not raw.strip():
            return True
        checked = self.checked
        checked.lines += 1
        checked.bytes += len(raw)
        if checked.lines > MAX_LINES:
            checked.refuse(number, "too_many_requests", f"A batch holds at most {MAX_LINES} requests.")
            return self._end()
        line = self._check(number, raw)
        if checked.embedding_inputs > MAX_EMBEDDING_INPUTS:
            message = f"An embeddings batch holds at most {MAX_EMBEDDING_INPUTS} inputs across its requests."
            checked.refuse(number, "too_many_embedding_inputs", message, "body.input")
            return self._end()
        return line or True

    def _end(self) -> bool:
        """No more lines are read (False); a file without one is refused."""
        if not self._ended and self.checked.lines == 0:
            self.checked.refuse(1, "empty_file", "The input file has no requests.")
        self._ended = True
        return False

    def _check(self, number: int, raw: bytes) -> Line | None:
        """The line, stored as it will be, if it has no problem; else None, its problems noted."""
        checked = self.checked
        try:
            line = loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
            checked.refuse(number, "invalid_json_line", "This line is not parsable as valid JSON.")
            return None
        if not isinstance(line, dict):
            checked.refuse(number, "invalid_json_line", "This line is not a JSON object.")
            return None
        if (pointer := storable.first_unstorable(raw, line)) is not None:
            checked.refuse(number, "invalid_text", storable.UNSTORABLE, pointer.lstrip("/").replace("/", "."))
            return None
        if self._endpoint == EMBEDDINGS:
            checked.embedding_inputs += embedding_inputs(line.get("body"))
        custom_id = self._custom_id(number, line.get("custom_id"))
        if custom_id is None:
            return None
        if line.get("method", "POST") != "POST":
            checked.refuse(number, "invalid_method", "Only POST is supported.", "method")
        if line.get("url") != self._endpoint:
            checked.refuse(
                number,
                "mismatched_endpoint",
                f"The url of this request is not the batch's endpoint {self._endpoint}.",
                "url",
            )
        body = with_default_model(line.get("body"), checked.default_model)
        model = self._model(number, body)
        if model is None or checked.errors:  # no line is stored once one has a problem
            return None
        return Line(custom_id, self._endpoint, model, jsontext.dumps(body), len(raw))

    def _custom_id(self, number: int, custom_id: Any) -> str | None:
        """The line's custom_id; None (refused) when it is missing or too long: the line's other
        fields are not checked then. A duplicate is refused too, but the rest of its line is."""
        checked = self.checked
        if not isinstance(custom_id, str) or not custom_id:
            checked.refuse(number, "missing_required_parameter", "custom_id is required.", "custom_id")
            return None
        if len(custom_id) > CUSTOM_ID_MAX_CHARS:
            message = f"custom_id is longer than {CUSTOM_ID_MAX_CHARS} characters."
            checked.refuse(number, TOO_LONG, message, "custom_id")
            return None
        if custom_id in self._seen:
            checked.refuse(
                number,
                "duplicate_custom_id",
                "The custom_id for this request is a duplicate of another request; it must be unique "
                "within the batch.",
                "custom_id",
            )
        self._seen.add(custom_id)
        return custom_id

    def _model(self, number: int, body: Any) -> str | None:
        """The body's model (None, refused, if it has none or too long a one); a model other
        than the batch's (the first line's) is refused too."""
        checked = self.checked
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            checked.refuse(number, "missing_required_parameter", "body.model is required.", "body.model")
            return None
        if len(model) > MODEL_MAX_CHARS:
            # Not kept as the batch's model either: the batches table holds no longer name.
            message = f"body.model is longer than {MODEL_MAX_CHARS} characters."
            checked.refuse(number, TOO_LONG, message, "body.model")
            return None
        if checked.model is None:
            checked.model = model
        elif model != checked.model:
            checked.refuse(
                number,
                "mismatched_model",
                f"The model {model!r} differs from {checked.model!r}; a batch holds requests for one model.",
                "body.model",
            )
        return model


def loads(raw: bytes) -> Any:
    """A line's JSON value: msgspec first (fast); the standard library decides when msgspec
    refuses (as bulk intake reads), so a lone surrogate escape reads as before (and is refused as
    unstorable), and NaN or Infinity, not JSON, raise ValueError."""
    try:
        return _decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return jsontext.strict_loads(raw)


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
