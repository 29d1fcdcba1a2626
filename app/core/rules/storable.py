"""What every database stores: text without NUL characters or lone surrogates.

PostgreSQL refuses both in text and JSONB (SQLite takes them), so a value from outside (a
receiver's answer, a model's output, an exception message) passes through here before it is
written; otherwise one bad value fails the transaction of every row written with it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

# What an unstorable string looks like in raw JSON: a \u0000 escape or a surrogate escape. Only
# a text that has one is walked (a valid pair, as an emoji can be written, passes the walk).
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")

REPLACEMENT = "\ufffd"

_encoder = msgspec.json.Encoder()


def text(value: str | None) -> str | None:
    """`value` with NUL characters replaced by U+FFFD and lone surrogates by "?"."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate becomes "?"
    return value


def json_value(value: Any) -> Any:
    """A JSON value (dicts, lists, strings, numbers) with every string made storable."""
    # msgspec's encoder refuses a lone surrogate and writes a NUL as \u0000: a value it encodes
    # without one is storable as it is, found ten times faster than by walking it (the walk was a
    # third of collecting an OpenAI batch's results).
    try:
        suspect = b"\\u0000" in _encoder.encode(value)
    except (UnicodeEncodeError, TypeError, msgspec.EncodeError):
        suspect = True
    return _walked(value) if suspect else value


def _walked(value: Any) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(k): _walked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_walked(v) for v in value]
    return value


def suspect(raw: bytes | str) -> bool:
    """Whether the value decoded from the JSON text `raw` may hold an unstorable string: only an
    escape can write one (JSON text holds no raw NUL, UTF-8 no lone surrogate). A value from a
    text that is not suspect is storable as it is, without the walk or json_value's encoding."""
    text = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    return _SUSPECT.search(text) is not None


def first_unstorable(raw: bytes | str, value: Any) -> str | None:
    """The JSON pointer of the first string in `value` (decoded from `raw`) that holds a NUL
    character or a lone surrogate; None when every string can be stored as it is."""
    if not suspect(raw):
        return None
    return first_unstorable_in(value)


def first_unstorable_in(value: Any, pointer: str = "") -> str | None:
    """The pointer (under `pointer`) of the first unstorable string in `value`, walking it all."""
    if isinstance(value, str):
        return pointer if text(value) != value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and text(key) != key:
            return f"{pointer}/{key}"
        if (found := first_unstorable_in(item, f"{pointer}/{key}")) is not None:
            return found
    return None


UNSTORABLE = "A string holds a NUL character (\\u0000) or an unpaired surrogate, which cannot be stored."
