"""What a webhook URL may be: an absolute http(s) URL without credentials whose host is a host
name or an address written plainly (checked once per URL: the answers are cached)."""

from __future__ import annotations

import ipaddress
import re
import socket
from functools import lru_cache

import httpx


# Cached: clients send the same few webhook URLs again and again, and parsing one took a tenth of
# an intake's CPU time. Only valid URLs are kept (an exception is not cached).
@lru_cache(maxsize=4096)
def webhook_host(url: str) -> str:
    """The host a webhook URL names; ValueError when it is not an absolute http(s) URL without
    credentials."""
    try:
        parsed = httpx.URL(url)
    except Exception as exc:
        raise ValueError(f"{url!r} is not a URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("webhook_url must be an absolute http:// or https:// URL")
    if parsed.userinfo:
        raise ValueError("webhook_url must not contain credentials")
    host, ascii_host = parsed.host, parsed.raw_host.decode("ascii", "replace")  # raw: punycode
    if ":" not in host and not _HOST_NAME.fullmatch(ascii_host):
        raise ValueError(f"webhook_url's host {host[:100]!r} is not a host name or address")
    if ":" not in host and _other_spelling_of_an_address(host):
        # 2130706433, 0x7f.1, 127.1 and 0 all reach 127.0.0.0/8 or 0.0.0.0 through the system's
        # resolver, past a check that reads them as names: refused here, not at send.
        raise ValueError(f"webhook_url's host {host!r} spells an IPv4 address; write it as a.b.c.d")
    return host


@lru_cache(maxsize=4096)
def webhook_port(url: str) -> int:
    """The port a valid webhook URL connects to (its scheme's when it names none)."""
    parsed = httpx.URL(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


_HOST_NAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
)


def _other_spelling_of_an_address(host: str) -> bool:
    """Whether the resolver reads `host` as an IPv4 address that is not written a.b.c.d."""
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return True
    return False
