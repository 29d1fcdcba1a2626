"""JSON, fast: msgspec encodes and decodes, with the standard library for what it refuses.

Intake turns every request into JSON text three times (its size as a batch line, its body and its
delivery config as stored), and json.dumps took about a tenth of an intake's CPU time; msgspec
does the same in a tenth of the time. It refuses lone surrogates, which the standard library
escapes, so such a value takes the old way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class Encoded:
    """A JSON value's text as it came in (valid JSON, storable): a JSON column given one stores
    the text as it is (app.db.driver) instead of decoding and encoding the value again."""

    text: str


def dumps(value: Any) -> str:
    """`value` as compact JSON text (UTF-8 characters as they are, keys in their order)."""
    try:
        return _encoder.encode(value).decode()
    except (UnicodeEncodeError, TypeError, msgspec.EncodeError):
        return json.dumps(value, separators=(",", ":"))  # a lone surrogate escaped as \udXXX


def loads(text: str | bytes) -> Any:
    """The value of JSON `text`, as json.loads gives it, decoded by msgspec where it can."""
    try:
        return _decoder.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)  # a lone surrogate escape, NaN, or not JSON (which raises here)


def strict_loads(text: str | bytes) -> Any:
    """json.loads, refusing NaN, Infinity and -Infinity (ValueError): Python reads them, but
    they are not JSON, and no backend or database takes them."""
    try:
        # What msgspec decodes, json.loads decodes alike (it refuses NaN and the rest of what
        # it does not read the same way: a number past a float, a BOM, a lone surrogate); the
        # standard library's own error messages are kept for what it refuses. json.loads was
        # 6% of intake's CPU time.
        return _decoder.decode(text)
    except (msgspec.DecodeError, UnicodeEncodeError):  # a str holding a lone surrogate
        pass
    return json.loads(text, parse_constant=_not_json)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
