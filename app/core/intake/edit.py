"""An operator's edit of a delivery config: which stored webhook headers it keeps.

Header values are never shown (only their names, with REDACTED), so an operator who re-points a
delivery cannot send them back. The rules:

- `headers` left out: the stored headers are kept;
- `headers` given: they replace the stored ones, and a value of REDACTED (what the edit form
  shows) keeps that header's stored value; `{}` removes them all;
- a kept value is only ever sent to the origin (scheme, host, port) it was given for: an edit
  that moves kept headers to another origin is refused (`headers_not_kept`), so a bearer token
  never leaks to a host nobody gave it for. Give the values again to send them there.
- a list of destinations (fan-out): each webhook entry keeps the headers stored for the same
  webhook_url, by the rules above.
"""

from __future__ import annotations

from typing import Any

import httpx

from app.core.intake.schema import pointer_token
from app.core.rules.errors import InvalidInput, Problem
from app.core.rules.fanout import destinations_of
from app.ground import webhook_headers

POINTER = "/delivery_config/headers"


def keep_headers(config: Any, stored: Any, pointer: str = POINTER) -> Any:
    """`config` (as the operator sent it) with the stored header values it keeps filled in."""
    if isinstance(config, list):
        by_url = {entry.get("webhook_url"): entry for entry in destinations_of(stored)}
        return [
            keep_headers(entry, by_url.get(entry.get("webhook_url")), f"/delivery_config/{index}/headers")
            if isinstance(entry, dict)
            else entry
            for index, entry in enumerate(config)
        ]
    if not isinstance(stored, dict):
        stored = None
    old = (stored or {}).get("headers") if (stored or {}).get("type") == "webhook" else None
    if not isinstance(config, dict) or config.get("type") != "webhook" or not old:
        return config
    if "headers" not in config:
        merged, kept = dict(old), bool(old)
    elif isinstance(config["headers"], dict):
        merged, kept = _fill_redacted(config["headers"], old, pointer)
    else:
        return config  # not an object: validation says so
    if kept and not _same_origin(config.get("webhook_url"), (stored or {}).get("webhook_url")):
        raise InvalidInput(
            Problem(
                "headers_not_kept",
                "Headers not carried to another host",
                "The stored headers were given for another origin (scheme, host and port) than the "
                "new webhook_url; give their values again to send them there, or 'headers': {} to "
                "send none.",
                pointer,
            )
        )
    return {**config, "headers": merged}


def _fill_redacted(given: dict[str, Any], old: dict[str, str], pointer: str) -> tuple[dict[str, Any], bool]:
    by_name = {name.lower(): value for name, value in old.items()}
    merged, kept = {}, False
    for name, value in given.items():
        if value != webhook_headers.REDACTED:
            merged[name] = value
            continue
        if (stored := by_name.get(str(name).lower())) is None:
            raise InvalidInput(
                Problem(
                    "invalid_header",
                    "Invalid header",
                    f"delivery_config.headers.{name}: {webhook_headers.REDACTED} stands for a stored "
                    "value, and this request has no stored header of that name; give its value.",
                    f"{pointer}/{pointer_token(str(name))}",
                )
            )
        merged[name], kept = stored, True
    return merged, kept


def _same_origin(new: Any, old: Any) -> bool:
    try:
        a, b = httpx.URL(str(new)), httpx.URL(str(old))
    except Exception:  # an unparseable URL: validation refuses it next, so nothing is sent
        return True
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)
