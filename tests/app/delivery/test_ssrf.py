"""The SSRF guard (issue 14, item 4): link-local and cloud metadata addresses are refused in every
spelling, private ones unless WEBHOOK_ALLOW_PRIVATE, and the address checked is the address
connected to, however DNS answers the next time."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from app.channels.base import Message
from app.channels.webhook import WebhookChannel
from app.net import destinations
from testkit import StartApp, fast_settings
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.serve import serve
from testkit.tls import self_signed

METADATA_SPELLINGS = [
    "169.254.169.254",
    "169.254.0.1",
    "fd00:ec2::254",
    "fe80::1",
    "::ffff:169.254.169.254",  # IPv4-mapped
    "64:ff9b::a9fe:a9fe",  # NAT64 (RFC 6052)
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 (RFC 8215)
    "2002:a9fe:a9fe::1",  # 6to4
    "::a9fe:a9fe",  # IPv4-compatible
]
PRIVATE = ["127.0.0.1", "10.1.2.3", "192.168.0.10", "::1", "fc00::5", "::ffff:10.0.0.1", "64:ff9b::a00:1"]
PUBLIC = ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"]


@pytest.mark.parametrize("allow_private", [True, False])
def test_which_addresses_are_refused(allow_private: bool) -> None:
    def refused(text: str) -> bool:
        return destinations.refusal(ipaddress.ip_address(text), allow_private) is not None

    assert all(refused(a) for a in METADATA_SPELLINGS)
    assert [a for a in PRIVATE if refused(a)] == ([] if allow_private else PRIVATE)
    assert not any(refused(a) for a in PUBLIC)


@pytest.mark.parametrize(
    "host", ["169.254.169.254", "[fd00:ec2::254]", "[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::]"]
)
async def test_metadata_targets_are_refused_at_intake_by_default(
    host: str, sqlite_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        answer = await app.submit("meta", f"http://{host}/latest/meta-data")
        assert answer.status_code == 422, answer.text
        error = answer.json()["errors"][0]
        assert error["code"] == "invalid_webhook_url" and "metadata" in error["detail"]
        assert error["source"]["pointer"] == "/delivery_config/webhook_url"
        assert (await app.submit("local", "http://10.1.2.3/hook")).status_code == 202  # allowed by default


async def test_private_targets_are_refused_at_intake_when_not_allowed(
    sqlite_url: str, start_app: StartApp
) -> None:
    settings = fast_settings(sqlite_url, scheduler_enabled=False, webhook_allow_private=False)
    async with start_app(settings) as app:
        for n, url in enumerate(["http://10.1.2.3/hook", "http://localhost:8080/hook", "http://[::1]/hook"]):
            answer = await app.submit(f"p{n}", url)
            assert answer.status_code == 422, url
            assert "WEBHOOK_ALLOW_PRIVATE=false" in answer.json()["errors"][0]["detail"]


async def test_other_spellings_of_an_address_and_bad_host_names_are_refused_at_intake(
    sqlite_url: str, start_app: StartApp
) -> None:
    # The system's resolver reads these as 127.0.0.1 or 0.0.0.0: they passed intake as names and
    # failed only at send (issue 29). A host with a space is no host at all.
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        hosts = ["2130706433", "0x7f.1", "127.1", "0", "017700000001", "a%20b", "a_b..c"]
        for n, host in enumerate(hosts):
            answer = await app.submit(f"spelled-{n}", f"http://{host}/hook")
            assert answer.status_code == 422, (host, answer.text)
            error = answer.json()["errors"][0]
            assert error["code"] == "invalid_webhook_url" and "host" in error["detail"], (host, error)
        for n, url in enumerate(["http://127.0.0.1:9/x", "http://my-svc/x", "http://bücher.example/x"]):
            assert (await app.submit(f"fine-{n}", url)).status_code == 202, url


def message(url: str) -> Message:
    return Message("dlv_1", "c1", 1, b'{"custom_id":"c1"}', {"type": "webhook", "webhook_url": url})


class Rebinding:
    """A resolver that answers with a harmless address once, then with the metadata service."""

    def __init__(self, first: str) -> None:
        self.answers = [[first], ["169.254.169.254"]]
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        return self.answers[min(len(self.asked), 2) - 1]


async def test_the_address_checked_is_the_address_connected_to(receiver: WebhookReceiver) -> None:
    port = int(receiver.url.rsplit(":", 1)[1])
    resolver = Rebinding("127.0.0.1")
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite://"), resolve=resolver)
    try:
        first = await channel.send(message(f"http://rebind.test:{port}/hook"))
        second = await channel.send(message(f"http://rebind.test:{port}/hook"))
    finally:
        await channel.close()
    # The first attempt connected to the one address it checked (the name exists nowhere else),
    # and still said which host it meant.
    assert first.outcome == "success", first.error
    assert resolver.asked == ["rebind.test", "rebind.test"]  # once per attempt, never again inside one
    assert [r.headers["host"] for r in receiver.received] == [f"rebind.test:{port}"]
    # The next answer points at the metadata service: refused for good, nothing sent.
    assert second.outcome == "permanent_failure"
    assert "metadata" in (second.error or "")
    assert len(receiver.received) == 1


async def test_a_name_with_one_refused_address_is_refused(receiver: WebhookReceiver) -> None:
    async def resolve(host: str) -> list[str]:
        return ["127.0.0.1", "169.254.169.254"]

    port = int(receiver.url.rsplit(":", 1)[1])
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite://"), resolve=resolve)
    try:
        result = await channel.send(message(f"http://mixed.test:{port}/hook"))
    finally:
        await channel.close()
    assert result.outcome == "permanent_failure" and "metadata" in (result.error or "")
    assert receiver.received == []


async def test_private_names_are_refused_at_send_when_not_allowed(receiver: WebhookReceiver) -> None:
    port = int(receiver.url.rsplit(":", 1)[1])
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite://", webhook_allow_private=False))
    try:
        by_name = await channel.send(message(f"http://localhost:{port}/hook"))
        resolving = WebhookChannel(
            fast_settings("sqlite+aiosqlite://", webhook_allow_private=False), resolve=Rebinding("10.0.0.7")
        )
        try:
            by_answer = await resolving.send(message(f"http://internal.test:{port}/hook"))
        finally:
            await resolving.close()
    finally:
        await channel.close()
    assert by_name.outcome == by_answer.outcome == "permanent_failure"
    assert "WEBHOOK_ALLOW_PRIVATE=false" in (by_answer.error or "")
    assert receiver.received == []


async def test_a_name_that_does_not_resolve_is_retried(receiver: WebhookReceiver) -> None:
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite://"))
    try:
        result = await channel.send(message("http://does-not-exist.invalid/hook"))
    finally:
        await channel.close()
    assert result.outcome == "retryable_failure" and "cannot resolve" in (result.error or "")


def test_the_old_switch_still_closes_the_guard() -> None:
    assert (
        fast_settings("sqlite+aiosqlite://", webhook_block_private_networks=True).webhook_allow_private
        is False
    )
    assert fast_settings("sqlite+aiosqlite://").webhook_allow_private is True


@pytest.mark.parametrize("certified", ["receiver.test", "other.test"])
async def test_https_connects_to_the_checked_address_and_verifies_the_url_host(
    certified: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTPS the pinned address is connected to, while SNI and the certificate's name
    check use the URL's host: a certificate for another name is refused."""
    cert, key = self_signed(tmp_path, certified)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the certificate is its own CA

    async def resolve(host: str) -> list[str]:
        return ["127.0.0.1"]

    receiver = WebhookReceiver()
    async with serve(receiver, tls=(cert, key)) as url:
        port = int(url.rsplit(":", 1)[1])
        channel = WebhookChannel(fast_settings("sqlite+aiosqlite://"), resolve=resolve)
        try:
            result = await channel.send(message(f"https://receiver.test:{port}/hook"))
        finally:
            await channel.close()
    if certified == "receiver.test":
        assert result.outcome == "success", result.error
        assert [r.headers["host"] for r in receiver.received] == [f"receiver.test:{port}"]
    else:
        assert result.outcome == "retryable_failure"
        assert "certificate" in (result.error or "").lower(), result.error
        assert receiver.received == []
