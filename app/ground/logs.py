"""Logging: plain lines or JSON (LOG_FORMAT=json), carrying the ids of what is being worked on.

The ids come from a context variable: `bound(batch_id=...)` around a batch's run or a delivery's
send puts them on every record logged inside it (asyncio tasks inherit the context they are
created in), so a line is found by batch or delivery without each call site repeating them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_ids: ContextVar[dict[str, Any]] = ContextVar("log_ids", default={})  # noqa: B039 (never mutated)


@contextmanager
def bound(**ids: Any) -> Iterator[None]:
    """Put `ids` on every record logged inside the block (in this task and those it starts)."""
    token = _ids.set({**_ids.get(), **ids})
    try:
        yield
    finally:
        _ids.reset(token)


class WithIds(logging.Filter):
    """Copies the bound ids onto each record, as attributes (JSON fields)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _ids.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def configure(level: str, fmt: str, stream: IO[str] | None = None) -> logging.Handler:
    """One handler on the root logger, plain or JSON; returns it."""
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(PLAIN))
    handler.addFilter(WithIds())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiosqlite logs every statement with its parameters at DEBUG: request bodies and webhook
    # header values (secrets). LOG_LEVEL=debug is for Batchgate's own lines, not those.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))
    return handler
