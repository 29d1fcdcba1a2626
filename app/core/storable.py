"""What every database stores: text without NUL characters or lone surrogates.

PostgreSQL refuses both in text and JSONB (SQLite takes them), so a value from outside (a
receiver's answer, a model's output, an exception message) passes through here before it is
written; otherwise one bad value fails the transaction of every row written with it.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


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
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_value(v) for v in value]
    return value
