"""The params of one Anthropic request, checked at create as Anthropic checks them.

What the local backend's translation (app.backends.anthropic_messages) reads must have the type
Anthropic documents: a `messages` entry that is not an object, or `metadata` that is a string,
would otherwise be taken, then fail at run time with Python's exception text as the request's
result. Only types and the limits Batchgate stores are checked here; a content block of a type
the translation cannot carry (an image, a tool) stays the request's own `invalid_request_error`
when it runs, as documented.
"""

from __future__ import annotations

from typing import Any

from app.core.intake.schema import MODEL_MAX_CHARS
from app.core.rules.errors import Problem

ROLES = ("user", "assistant", "system")
Found = list[Problem]


def refused(title: str, detail: str, pointer: str) -> Problem:
    """A problem of an Anthropic request list, at `pointer` (a JSON pointer into the body)."""
    return Problem("invalid_request", title, detail, pointer)


def params_problems(params: dict[str, Any], where: str) -> Found:
    """Every problem of `params` (at `where`, e.g. "/requests/3/params")."""
    found: Found = []
    model = params.get("model")
    if not isinstance(model, str) or not model or len(model) > MODEL_MAX_CHARS:
        rule = f"params.model must be a model name of 1 to {MODEL_MAX_CHARS} characters."
        found.append(refused("Invalid model", rule, where + "/model"))
    for name in ("max_tokens", "messages"):
        if name not in params:
            found.append(refused("Missing field", f"params.{name} is required.", f"{where}/{name}"))
    tokens = params.get("max_tokens", 1)
    if not _whole(tokens) or tokens < 1:
        rule = "params.max_tokens must be a whole number of at least 1."
        found.append(refused("Invalid max_tokens", rule, where + "/max_tokens"))
    found += _messages(params.get("messages", []), where + "/messages")
    if params.get("system") is not None:
        found += _content(params["system"], where + "/system", "params.system")
    found += _metadata(params.get("metadata"), where + "/metadata")
    found += _sampling(params, where)
    return found


def _messages(messages: Any, where: str) -> Found:
    """The first problem of the message list (one per list: a long list of bad entries would
    otherwise make an answer as long as the body)."""
    if not isinstance(messages, list):
        return [refused("Invalid messages", "params.messages must be a list of messages.", where)]
    for index, message in enumerate(messages):
        at = f"{where}/{index}"
        if not isinstance(message, dict):
            rule = "each message must be an object with role and content."
            return [refused("Invalid message", rule, at)]
        if message.get("role") not in ROLES:
            rule = f"role must be one of {', '.join(ROLES)}."
            return [refused("Invalid role", rule, at + "/role")]
        if "content" not in message:
            return [refused("Missing field", "content is required.", at + "/content")]
        if found := _content(message["content"], at + "/content", "content"):
            return found
    return []


def _content(content: Any, where: str, name: str) -> Found:
    """A string or a list of content blocks (objects with a `type`; a text block's `text` is a
    string). Which block types run is the translation's decision, made when the request runs."""
    if isinstance(content, str):
        return []
    if not isinstance(content, list):
        return [refused("Invalid content", f"{name} must be a string or a list of content blocks.", where)]
    for index, block in enumerate(content):
        at = f"{where}/{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return [refused("Invalid content block", "a content block must be an object with a type.", at)]
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            return [refused("Invalid text block", "a text block's text must be a string.", at + "/text")]
    return []


def _metadata(metadata: Any, where: str) -> Found:
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return [refused("Invalid metadata", "params.metadata must be an object.", where)]
    if metadata.get("user_id") is not None and not isinstance(metadata["user_id"], str):
        return [refused("Invalid metadata", "metadata.user_id must be a string.", where + "/user_id")]
    return []


def _sampling(params: dict[str, Any], where: str) -> Found:
    """stop_sequences, temperature, top_p and top_k: passed on to the server as they are, so of
    the type it expects (or null, which it ignores)."""
    found: Found = []
    stops = params.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        rule = "params.stop_sequences must be a list of strings."
        found.append(refused("Invalid stop_sequences", rule, where + "/stop_sequences"))
    for name in ("temperature", "top_p"):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            found.append(refused(f"Invalid {name}", f"params.{name} must be a number.", f"{where}/{name}"))
    top_k = params.get("top_k")
    if top_k is not None and (not _whole(top_k) or top_k < 0):
        rule = "params.top_k must be a whole number of at least 0."
        found.append(refused("Invalid top_k", rule, where + "/top_k"))
    return found


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
