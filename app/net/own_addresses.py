"""This server's own addresses: where a webhook would be Batchgate calling itself.

A webhook sent there can call Batchgate's own API: two requests whose webhooks were each other's
`POST /api/requests/{id}/redeliver` redelivered each other hundreds of times a second (issue 29).
They are HOST:PORT (with HOST 0.0.0.0 or ::, every local address at PORT; with a loopback HOST,
every loopback address and `localhost` at PORT) and SELF_ADDRESSES, the host:port pairs of the
replicas, proxies and load balancers that answer for it. A URL's host is checked at intake; the
addresses a name resolves to are checked at send, by the SSRF guard (destinations.pin).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass

from app.ground.config import Settings, parse_host_ports
from app.net.destinations import Address, forms, literal

LOOPBACK_NAME = "localhost"


@dataclass(frozen=True, slots=True)
class OwnAddresses:
    """Where this server answers. `listen` holds HOST's addresses (none when HOST is 0.0.0.0 or
    ::, `any_local`); `names` and `addresses` are SELF_ADDRESSES's, a None port meaning any."""

    port: int
    listen: frozenset[Address]
    any_local: bool
    names: frozenset[tuple[str, int | None]]
    addresses: frozenset[tuple[Address, int | None]]

    def by_name(self, host: str, port: int) -> str | None:
        """Why a URL's host and port are this server (as written, before any lookup), or None."""
        host = host.lower().rstrip(".")
        if (address := literal(host)) is not None:
            return self.by_address(address, port)
        if (host, port) in self.names or (host, None) in self.names:
            return f"{host}:{port} is an address of this server (SELF_ADDRESSES)"
        loopback = self.any_local or any(a.is_loopback for a in self.listen)
        is_loopback_name = host == LOOPBACK_NAME or host.endswith("." + LOOPBACK_NAME)
        if port == self.port and loopback and is_loopback_name:
            return f"{host}:{port} is this server's own address (HOST:PORT)"
        return None

    def by_address(self, address: Address, port: int) -> str | None:
        """Why connecting to `address` at `port` reaches this server, or None."""
        for candidate in forms(address):
            if (candidate, port) in self.addresses or (candidate, None) in self.addresses:
                return f"{address} port {port} is an address of this server (SELF_ADDRESSES)"
            if port == self.port and self._listens_on(candidate):
                return f"{address} port {port} is this server's own address (HOST:PORT)"
        return None

    def _listens_on(self, address: Address) -> bool:
        if address in self.listen or address.is_unspecified:
            return True
        if address.is_loopback and (self.any_local or any(a.is_loopback for a in self.listen)):
            return True
        return self.any_local and is_local(address)


def is_local(address: Address) -> bool:
    """Whether `address` is one of this machine's: only those can be bound to. Asked only for a
    URL at this server's port, so it costs a socket now and then, not one a delivery."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def of(settings: Settings) -> OwnAddresses:
    """The own addresses `settings` describe."""
    return _own(settings.host, settings.port, settings.self_addresses)


@functools.lru_cache(maxsize=16)
def _own(host: str, port: int, self_addresses: str) -> OwnAddresses:
    names: set[tuple[str, int | None]] = set()
    addresses: set[tuple[Address, int | None]] = set()
    for name, its_port in parse_host_ports(self_addresses):
        if (address := literal(name)) is not None:
            addresses.add((address, its_port))
        else:
            names.add((name, its_port))
    listen = _resolved(host.strip("[]"))
    if literal(host) is None:  # a name: it answers by that name too
        names.add((host.lower().rstrip("."), port))
    any_local = any(a.is_unspecified for a in listen)
    return OwnAddresses(port, frozenset(listen), any_local, frozenset(names), frozenset(addresses))


def _resolved(host: str) -> set[Address]:
    """HOST's addresses: itself when it is one, else what the name resolves to now (once)."""
    if (address := literal(host)) is not None:
        return {address}
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return set()
    return {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
