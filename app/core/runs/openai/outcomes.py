"""An OpenAI output or error file's lines, each read into what its request's row will store.

Collecting reads a chunk of lines while the chunk before it is being stored (collect's
_apply_files), so everything a line decides on its own is done here: whether it decoded, what it
means (answers.classify), the row's status, usage and response column. What needs the row (its
id, how often it was resubmitted, its attempts) is left to the store, inside its transaction.

A line answered with 2xx, no error and no escape that could hold an unstorable string (the usual
line) is read by msgspec into the few fields it needs, and its response is stored as the text it
came in (jsontext.Encoded), not decoded whole and encoded again: the same JSON value, the bytes
OpenAI sent. Every other line is decoded whole and classified as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from app.core import results
from app.core.rules import storable
from app.core.runs.openai.answers import classify
from app.ground import jsontext
from app.ground.statuses import RequestStatus


class _Body(msgspec.Struct):
    usage: Any = None


class _Response(msgspec.Struct):
    status_code: int
    body: _Body


class _Answered(msgspec.Struct):
    """The fields of a usual output line the fast path reads; the response kept as its text."""

    custom_id: str
    response: msgspec.Raw
    error: None = None


_answered = msgspec.json.Decoder(_Answered)
_response = msgspec.json.Decoder(_Response)


@dataclass(slots=True)
class Outcome:
    """One line as its request will store it (or be resubmitted)."""

    kind: str  # answers.classify's: ok, expired, server_error or failed
    response: Any  # the response column's value: a JSON value, or jsontext.Encoded text
    error: dict[str, Any] | None  # classify's error (server_error's is completed by the store)
    tokens: dict[str, int]  # the usage columns the line adds to its batch
    usage: dict[str, int | None]  # the request's own usage columns

    @property
    def status(self) -> str:
        return RequestStatus.SUCCEEDED if self.error is None else RequestStatus.FAILED


@dataclass
class Parsed:
    """A chunk of output/error lines as read (`raw`) and as their requests store them, by custom_id."""

    raw: Sequence[str]
    lines: dict[str, Outcome]
    malformed: int  # lines that did not decode, or named no custom_id


def parse(raw: Sequence[str]) -> Parsed:
    """Read a chunk of lines (a line naming a custom_id again replaces the one before)."""
    chunk = Parsed(raw, {}, 0)
    for text in raw:
        try:
            custom_id, outcome = _answered_line(text) or _any_line(text)
        except (ValueError, KeyError, TypeError):
            chunk.malformed += 1  # its request gets no line and is resubmitted
            continue
        chunk.lines[custom_id] = outcome
    return chunk


def _answered_line(text: str) -> tuple[str, Outcome] | None:
    """A 2xx line without error or suspect escape, read without decoding its body; else None."""
    if storable.suspect(text):
        return None
    try:
        line = _answered.decode(text)
        response = _response.decode(line.response)
    except msgspec.DecodeError:  # ValidationError too: another shape, read by _any_line
        return None
    if not 200 <= response.status_code < 300:
        return None
    usage = response.body.usage if isinstance(response.body.usage, dict) else {}
    encoded = jsontext.Encoded(bytes(line.response).decode())
    return line.custom_id, _outcome("ok", encoded, None, usage)


def _any_line(text: str) -> tuple[str, Outcome]:
    """Any line, decoded whole (storable: see storable.suspect) and classified."""
    line = jsontext.loads(text)
    if storable.suspect(text):  # only then can it hold what the database refuses
        line = storable.json_value(line)
    custom_id = str(line["custom_id"])
    kind, error = classify(line)
    response = line.get("response")
    return custom_id, _outcome(kind, response, error, results.line_usage(response))


def _outcome(kind: str, response: Any, error: dict[str, Any] | None, usage: dict[str, Any]) -> Outcome:
    tokens = results.usage_columns(usage)
    return Outcome(kind, response, error, tokens, results.request_usage(usage, tokens))
