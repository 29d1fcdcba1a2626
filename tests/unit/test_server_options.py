"""`batchgate serve` runs uvicorn on uvloop and httptools (issue 15), and both are installed; it
leaves X-Forwarded-* to the app, which believes only the proxies FORWARDED_ALLOW_IPS lists."""

from __future__ import annotations

import importlib

import pytest
from pydantic import ValidationError

from app.__main__ import server_options
from app.ground.config import Settings, parse_proxies


def test_serve_uses_uvloop_and_httptools_by_default() -> None:
    options = server_options(Settings(_env_file=None, port=4321))  # type: ignore[call-arg]
    assert (options["loop"], options["http"], options["port"]) == ("uvloop", "httptools", 4321)
    for module in ("uvloop", "httptools"):  # an explicit choice must not fail at start
        importlib.import_module(module)


def test_the_pure_python_server_stays_available() -> None:
    settings = Settings(_env_file=None, server_loop="asyncio", server_http="h11")  # type: ignore[call-arg]
    assert (server_options(settings)["loop"], server_options(settings)["http"]) == ("asyncio", "h11")


def test_uvicorn_never_reads_forwarded_headers_itself() -> None:
    """The app reads them (app.web.forwarded): uvicorn's reading would replace the peer's address
    before the app could tell a listed proxy from a client, and trusts 127.0.0.1 by default."""
    for allow in ("", "127.0.0.1", "*"):
        settings = Settings(_env_file=None, forwarded_allow_ips=allow)  # type: ignore[call-arg]
        assert server_options(settings)["proxy_headers"] is False


@pytest.mark.parametrize("bad", ["10.0.0.1,*", "10.0.0.0/33", "proxy.local", "10.0.0.1/8", "unix:/run/x"])
def test_a_forwarded_allow_ips_entry_that_is_no_network_stops_the_start(bad: str) -> None:
    # uvicorn would read it as a name that never matches: the proxy silently not trusted.
    with pytest.raises(ValidationError, match="FORWARDED_ALLOW_IPS"):
        Settings(_env_file=None, forwarded_allow_ips=bad)  # type: ignore[call-arg]


def test_forwarded_allow_ips_takes_addresses_networks_or_everyone() -> None:
    settings = Settings(_env_file=None, forwarded_allow_ips=" 127.0.0.1, 10.0.0.0/8 ,fd00::/8,::1")  # type: ignore[call-arg]
    assert parse_proxies(settings.forwarded_allow_ips) == ("127.0.0.1", "10.0.0.0/8", "fd00::/8", "::1")
    assert parse_proxies("*") == ("*",) and parse_proxies("") == ()
