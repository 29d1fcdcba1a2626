"""Settings given as comma-separated lists: backend routes, API keys, name patterns, host:port
pairs, proxy addresses."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from urllib.parse import urlsplit

BACKENDS = ("local", "openai")


@lru_cache(maxsize=16)
def parse_routes(value: str) -> tuple[tuple[str, str], ...]:
    """`gpt-*=openai,o*=openai,*=local` as ordered (pattern, backend) pairs; ValueError if malformed."""
    routes = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        pattern, sep, backend = (x.strip() for x in item.partition("="))
        if not sep or not pattern or backend not in BACKENDS:
            raise ValueError(
                f"{item!r} is not a route: write pattern=backend pairs separated by commas, "
                f"backend one of {', '.join(BACKENDS)} (e.g. gpt-*=openai,*=local)"
            )
        routes.append((pattern, backend))
    return tuple(routes)


def parse_keys(configured: str | None) -> tuple[str, ...]:
    """`key1,key2` as its keys, spaces around each dropped; ValueError if set but holding none.

    A value like "," is refused rather than read as "no keys": it would leave the API open to
    an operator who meant to close it.
    """
    if configured is None or not configured.strip():
        return ()
    keys = tuple(key for key in (part.strip() for part in configured.split(",")) if key)
    if not keys:
        raise ValueError("API_KEYS holds no key: give comma-separated keys, or leave it empty")
    return keys


@lru_cache(maxsize=16)
def parse_patterns(value: str) -> tuple[str, ...]:
    """`results.*,audit` as its names and shell-style patterns (empty entries dropped)."""
    return tuple(item for item in (part.strip() for part in value.split(",")) if item)


@lru_cache(maxsize=16)
def parse_host_ports(value: str) -> tuple[tuple[str, int | None], ...]:
    """`lb.example.com:443,10.0.0.5:4000,[fd00::5]:4000,proxy` as (host, port) pairs, the host
    lower-cased without brackets or a final dot; no port: every port of that host."""
    pairs = []
    for entry in parse_patterns(value):
        try:
            parsed = urlsplit(f"//{entry}")
            port = parsed.port
        except ValueError as exc:
            raise ValueError(f"SELF_ADDRESSES entry {entry!r}: {exc}") from None
        if not parsed.hostname or parsed.path or parsed.username:
            raise ValueError(f"SELF_ADDRESSES entry {entry!r} is not host:port")
        pairs.append((parsed.hostname.rstrip("."), port))
    return tuple(pairs)


@lru_cache(maxsize=16)
def parse_proxies(value: str) -> tuple[str, ...]:
    """`10.0.0.5,10.1.0.0/16,fd00::/8` (addresses and networks) or `*` (every peer), checked:
    uvicorn reads an entry it cannot parse as a name that never matches, so a typo would
    silently trust no proxy. ValueError names the entry."""
    entries = parse_patterns(value)
    if "*" in entries:
        if len(entries) > 1:
            raise ValueError("FORWARDED_ALLOW_IPS: `*` trusts every peer; give it alone")
        return entries
    for entry in entries:
        try:
            ipaddress.ip_network(entry) if "/" in entry else ipaddress.ip_address(entry)
        except ValueError:
            raise ValueError(
                f"FORWARDED_ALLOW_IPS entry {entry!r} is not an IP address or network (10.0.0.0/8)"
            ) from None
    return entries
