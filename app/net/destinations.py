"""Where a delivery may go: the SSRF guard for webhooks, the allow-lists for RabbitMQ.

Link-local addresses (169.254.0.0/16, fe80::/10), where clouds serve instance metadata and
credentials, are refused always, in every spelling an IPv6 address can carry an IPv4 one in
(IPv4-mapped, NAT64, 6to4, Teredo, IPv4-compatible). Loopback and private ranges are refused
unless WEBHOOK_ALLOW_PRIVATE: a self-hosted gateway usually delivers inside its own network.

A name is resolved once, every address it resolves to is checked, and the connection goes to the
checked address (`pin`): a DNS answer that changes between check and connect cannot move a
delivery somewhere else.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from app.ground.config import Settings, parse_patterns

if TYPE_CHECKING:  # it imports this module's address helpers
    from app.net.own_addresses import OwnAddresses

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str], Awaitable[list[str]]]

# Where clouds answer with instance metadata and credentials.
METADATA_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local: AWS, GCP, Azure, OpenStack, ... at 169.254.169.254
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS's IPv6 metadata address
    )
)
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class Refused(Exception):
    """A destination the guard does not allow; the message says why, for the operator."""


class Unresolvable(Exception):
    """A name that resolves to no address now (perhaps a passing DNS failure)."""


def forms(address: Address) -> list[Address]:
    """The address and every IPv4 address an IPv6 one embeds (each is where it may really go)."""
    found: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            found.append(address.ipv4_mapped)
        if address.sixtofour:
            found.append(address.sixtofour)
        if address.teredo:
            found.extend(address.teredo)
        if any(address in net for net in NAT64) or (address in IPV4_COMPATIBLE and int(address) > 1):
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def refusal(address: Address, allow_private: bool) -> str | None:
    """Why `address` may not be sent to, or None when it may."""
    embedded = forms(address)
    if any(a in net for a in embedded for net in METADATA_NETWORKS if a.version == net.version):
        return f"{address} is a link-local or cloud metadata address (always refused)"
    if any(a.is_multicast or a.is_unspecified for a in embedded):
        return f"{address} is not an address a webhook can be sent to"
    if not allow_private and not all(a.is_global for a in embedded):
        return f"{address} is a loopback or private address (WEBHOOK_ALLOW_PRIVATE=false)"
    return None


@functools.lru_cache(maxsize=4096)  # parsing one was 2% of intake's CPU time (asked twice a request)
def literal(host: str) -> Address | None:
    """The address a URL's host spells, if it is one."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)  # intake asks for every request, mostly of the same few hosts
def check_host(host: str, allow_private: bool) -> str | None:
    """Why a URL's host is refused before any lookup (an address literal, or localhost), or None.
    A name is checked when it is resolved, at send time (see `pin`)."""
    if (address := literal(host)) is not None:
        return refusal(address, allow_private)
    if not allow_private and (host == "localhost" or host.endswith(".localhost")):
        return f"{host} is a loopback name (WEBHOOK_ALLOW_PRIVATE=false)"
    return None


async def system_resolve(host: str) -> list[str]:
    """Every address `host` resolves to, by the system's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def pin(
    host: str,
    allow_private: bool,
    resolve: Resolve = system_resolve,
    own: OwnAddresses | None = None,
    port: int = 0,
) -> str:
    """The address to connect to for `host`: resolved once, and refused (Refused) when any of
    the addresses it resolves to is, or is this server's own at `port` (`own`: a webhook there
    calls Batchgate itself); Unresolvable when it resolves to none."""
    if own is not None and (why := own.by_name(host, port)) is not None:
        raise Refused(why)
    if (address := literal(host)) is not None:
        resolved = [address]
    else:
        if (why := check_host(host, allow_private)) is not None:
            raise Refused(why)
        try:
            answers = await resolve(host)
        except OSError as exc:  # socket.gaierror and friends
            raise Unresolvable(f"cannot resolve {host}: {exc}") from exc
        if not answers:
            raise Unresolvable(f"{host} resolves to no address")
        resolved = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answers]
    # One refused address refuses the name: a name that sometimes points at the metadata
    # service is hostile, whichever address this attempt would have used.
    for candidate in resolved:
        if (why := refusal(candidate, allow_private)) is not None:
            raise Refused(why if literal(host) else f"{host} resolves to {why}")
        if own is not None and (why := own.by_address(candidate, port)) is not None:
            raise Refused(why if literal(host) else f"{host} resolves to {why}")
    return str(resolved[0])


def rabbitmq_refusal(settings: Settings, queue: str | None, exchange: str | None) -> str | None:
    """Why a rabbitmq delivery target is outside the allow-lists (saying which setting would
    allow it) or is Batchgate's own intake queue, or None when it may be used."""
    if queue and (intake := settings.rabbitmq_input_queue) and queue in (intake, f"{intake}.dlq"):
        # A result published there would come back in as a request (or a refused one): a loop.
        return f"queue {queue!r} is Batchgate's own intake queue (RABBITMQ_INPUT_QUEUE) or its dead letters"
    kind, name, setting, value = (
        ("queue", queue, "RABBITMQ_DELIVERY_QUEUES", settings.rabbitmq_delivery_queues)
        if queue
        else ("exchange", exchange, "RABBITMQ_DELIVERY_EXCHANGES", settings.rabbitmq_delivery_exchanges)
    )
    patterns = parse_patterns(value)
    if not patterns or name is None or any(fnmatchcase(name, p) for p in patterns):
        return None
    return f"{kind} {name!r} is not allowed by {setting}"


DEFAULT_PORTS = {"http": 80, "https": 443}
# Longest destination key stored (deliveries.destination); longer ones are cut, which only merges
# two destinations that share their first 300 characters for the purpose of their limits.
DESTINATION_MAX = 300


def destination_of(target: Mapping[str, Any]) -> str:
    """The destination a delivery target sends to, as limits and health count it: a webhook's
    origin (`https://host:443`; paths and queries of one origin share its limits) or a RabbitMQ
    queue or exchange (`rabbitmq:queue/name`, `rabbitmq:exchange/name`)."""
    if target.get("type") == "rabbitmq":
        queue, exchange = target.get("rabbitmq_queue"), target.get("rabbitmq_exchange")
        key = f"rabbitmq:queue/{queue}" if queue else f"rabbitmq:exchange/{exchange}"
    else:
        url = urlsplit(str(target.get("webhook_url", "")))
        scheme, host = url.scheme.lower(), (url.hostname or "").lower()
        host = f"[{host}]" if ":" in host else host
        try:
            port = url.port or DEFAULT_PORTS.get(scheme)
        except ValueError:  # refused at intake; an old row may still hold one
            port = None
        key = f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"
    return key[:DESTINATION_MAX]
