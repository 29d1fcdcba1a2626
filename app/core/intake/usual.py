"""The usual request, recognised without pydantic: single and bulk intake check a request of the
common shape with plain tests that accept a strict subset of what the schema (schema.py) accepts,
and hand anything else to the schema, which decides and explains every problem. So an answer
to bad input is always the schema's own: these functions only ever say "surely valid" or "ask
the schema". Building RequestIn and its nested models was about 30 µs of a single intake's
200-300 µs of CPU time.
"""

from __future__ import annotations

from typing import Any

from app.core.intake.schema import CUSTOM_ID_MAX_CHARS, ENDPOINTS, MODEL_MAX_CHARS, addressable

# The fields the usual request may have; `complete_by` (a time pydantic parses in many forms) and
# anything unknown go to the schema.
FIELDS = frozenset(("custom_id", "url", "method", "body", "delivery_config", "backend"))
BACKEND_MAX_CHARS = 63  # RequestIn.backend's limit
_ENDPOINTS = frozenset(ENDPOINTS)
_DOTS = frozenset(("", ".", ".."))


def head(item: Any) -> tuple[str, str, dict[str, Any]] | None:
    """The custom_id, url and body (a dict, not checked inside) of a request whose other
    fields and whose custom_id and url the schema surely accepts; None when in any doubt."""
    if type(item) is not dict or not item.keys() <= FIELDS:
        return None
    custom_id, url, body = item.get("custom_id"), item.get("url"), item.get("body")
    if (
        type(custom_id) is not str
        or not 0 < len(custom_id) <= CUSTOM_ID_MAX_CHARS
        # Printable: no control character, odd space or lone surrogate (the schema explains those).
        or not custom_id.isprintable()
        # addressable()'s segment rule, short-cut for the usual id without '/'.
        or (custom_id in _DOTS if "/" not in custom_id else not addressable(custom_id))
        or type(url) is not str
        or url not in _ENDPOINTS
        or item.get("method", "POST") != "POST"
        or type(body) is not dict
    ):
        return None
    return custom_id, url, body


def model_of(body: dict[str, Any], default: str | None) -> tuple[str, dict[str, Any]] | None:
    """The model a body runs on and the body as stored (RequestIn.body_dict: the model first,
    then every other field in the order sent), the default model given to a body without one
    (schema.with_default_model); None when the schema should look at it."""
    model = body.get("model")
    if model is None and default:
        model, body = default, {key: value for key, value in body.items() if key != "model"}
    if type(model) is not str or not 0 < len(model) <= MODEL_MAX_CHARS:
        return None
    return model, {"model": model, **body}


def chosen_backend(item: dict[str, Any]) -> tuple[bool, str | None]:
    """(whether the schema surely takes the request's `backend`, the backend it names)."""
    backend = item.get("backend")
    if backend is None:
        return True, None
    return type(backend) is str and 0 < len(backend) <= BACKEND_MAX_CHARS, backend


def plain_delivery(config: Any) -> tuple[str, str | None] | None:
    """("none", None) or ("webhook", its URL) for the two commonest configs, which the schema
    takes as they are (a webhook URL still has its rules to pass); None for any other."""
    if type(config) is not dict:
        return None
    kind = config.get("type")
    if kind == "none" and len(config) == 1:
        return "none", None
    url = config.get("webhook_url")
    if kind == "webhook" and len(config) == 2 and type(url) is str:
        return "webhook", url
    return None
