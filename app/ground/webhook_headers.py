"""Extra headers a webhook delivery config may carry: what is allowed, and how they are shown.

Shared by intake (the schema refuses bad headers with a pointer), the webhook channel (which
checks them again before sending, in case a rule tightened after intake) and every face that
shows a delivery config (the values are secrets, e.g. a receiver's bearer token: only the names
are ever shown). No rule here ever quotes a header's value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from app.ground.sealing import PREFIX as SEALED_PREFIX

MAX_HEADERS = 20
MAX_HEADER_BYTES = 8192  # names and values together, as UTF-8
# Shown instead of a value. Not ASCII, so it can never be a real value (values are printable
# ASCII): an edit that sends it back means "keep the stored value".
REDACTED = "••••"

# Names Batchgate sets itself (framing, the Standard Webhooks signature, its own headers) and
# hop-by-hop ones: a caller may not override them, or forge a signature or break the framing.
RESERVED = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-connection",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-batchgate-attempt",
        "x-batchgate-custom-id",
    }
)
# Whole namespaces: Standard Webhooks may add headers, and x-batchgate-* are Batchgate's.
RESERVED_PREFIXES = ("webhook-", "x-batchgate-")

# RFC 9110 token characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Printable ASCII and tab; httpx sends values as ASCII, and h11 refuses edge whitespace.
_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an extra header (not a token, or one Batchgate sets), or None."""
    if not _TOKEN.fullmatch(name):
        return "a header name must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)"
    if reserved(name):
        return f"{name} is set by Batchgate itself and cannot be given"
    return None


def reserved(name: str) -> bool:
    lower = name.lower()
    return lower in RESERVED or lower.startswith(RESERVED_PREFIXES)


def value_problem(value: str) -> str | None:
    """Why `value` cannot be sent (never quoting it: it may be a secret), or None."""
    if value and not _VALUE.fullmatch(value):
        return (
            "a header value must be printable ASCII (no CR, LF, NUL or other control characters, "
            "no leading or trailing spaces)"
        )
    if value.startswith(SEALED_PREFIX):
        # Batchgate's mark of a value encrypted at rest: a given one could make it decrypt a
        # value copied from another request and send it here (app.ground.sealing).
        return f"a header value may not start with {SEALED_PREFIX!r}, Batchgate's mark of an encrypted value"
    return None


def set_problem(headers: Mapping[str, str]) -> str | None:
    """Why the set as a whole is refused (too many, too large, a name twice), or None."""
    if len(headers) > MAX_HEADERS:
        return f"at most {MAX_HEADERS} headers, not {len(headers)}"
    size = sum(len(name.encode()) + len(value.encode()) for name, value in headers.items())
    if size > MAX_HEADER_BYTES:
        return f"names and values together must be at most {MAX_HEADER_BYTES} bytes, not {size}"
    lowered = [name.lower() for name in headers]
    if twice := sorted({name for name in lowered if lowered.count(name) > 1}):
        return f"header names are case-insensitive: {', '.join(twice)} is given more than once"
    return None


def problems(headers: Any) -> list[str]:
    """Every reason a stored set of headers cannot be sent (the channel's check at send time)."""
    if headers is None:
        return []
    if not isinstance(headers, Mapping):
        return ["headers must be an object"]
    found = []
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            found.append("header names and values must be strings")
        elif why := name_problem(name) or value_problem(value):
            found.append(f"header {name!r}: {why}")
    if not found and (why := set_problem(headers)):
        found.append(why)
    return found


def redact(config: Any) -> Any:
    """A delivery config (one destination, or a list of them) as it may be shown: header values
    replaced by REDACTED."""
    if isinstance(config, list):
        return [redact(entry) for entry in config]
    if not isinstance(config, dict) or not isinstance(config.get("headers"), dict):
        return config
    return {**config, "headers": dict.fromkeys(config["headers"], REDACTED)}
