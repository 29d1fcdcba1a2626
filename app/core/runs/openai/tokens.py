"""Estimating a request's input tokens, for the enqueued-token limits.

tiktoken counts exactly, offline: the encodings OpenAI's models use are built from files installed
with the packages (encodings.py), never downloaded. Only a model whose encoding is not bundled (an
old completions model) needs tiktoken's download; where that fails the estimate falls back to
bytes / 4, OpenAI's own rule of thumb, and says so in the log. The estimate only decides when a
batch is submitted, never what is sent.
"""

from __future__ import annotations

import json
import logging
import math
from functools import lru_cache
from typing import Any, Protocol

from app.core.runs.openai import encodings

log = logging.getLogger(__name__)

# Per-message framing tokens in chat formats (role, separators), as OpenAI's cookbook counts them.
TOKENS_PER_MESSAGE = 4


class Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


@lru_cache(maxsize=64)
def encoding_for(model: str) -> Encoding | None:
    """tiktoken's encoding for the model (o200k_base when unknown), or None when unavailable."""
    try:
        return encodings.get_encoding(encodings.encoding_name(model))
    except Exception as exc:  # an unbundled encoding and no network: fall back, once per model
        log.warning("tiktoken has no encoding for %s (%s); estimating tokens as bytes/4", model, exc)
        return None


def prompt_text(body: dict[str, Any]) -> tuple[str, int]:
    """The text a request sends as input, and how many chat messages it has."""
    parts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                _collect(message.get("content"), parts)
    for key in ("input", "prompt", "instructions"):
        _collect(body.get(key), parts)
    return "\n".join(parts), len(messages) if isinstance(messages, list) else 0


def estimate(body: dict[str, Any], encoding: Encoding | None) -> int:
    """Input tokens of one request body: counted by `encoding`, else bytes / 4."""
    text, messages = prompt_text(body)
    if encoding is not None:
        counted = len(encoding.encode_ordinary(text))
    else:
        counted = math.ceil(len(text.encode()) / 4)
    return counted + messages * TOKENS_PER_MESSAGE + 1


def _collect(value: Any, parts: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                # Content parts carry their text under "text"; other parts (images) count as JSON.
                text = item.get("text", item.get("content"))
                if text is not None:
                    _collect(text, parts)
                else:
                    parts.append(json.dumps(item))
            else:
                _collect(item, parts)
    elif isinstance(value, dict):
        parts.append(json.dumps(value))
    else:
        parts.append(str(value))
