"""SECRETS_KEY sealing (app.ground.sealing) and the webhook channel's signatures (issue 28 part 6):
sealed values open only with a listed key, plain ones pass through, a bad key stops the settings;
a message carrying several secrets is signed with each, and any one verifies."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from app.channels.base import GLOBAL_SECRET, Message
from app.channels.webhook import WebhookChannel
from app.core.destinations.secrets import signing
from app.ground import sealing
from testkit import fast_settings
from testkit.signing import verifies

# Fixed keys (Fernet.generate_key()), so that every test process collects the same test ids.
KEY, OLD_KEY = "JEDXcw0hIjwoTDE6Q8_4jSqPYIZdzUHy9a_1V3MnK4A=", "kWpx5kBXNRdcaTogplRXp6upfQsLLwCbA1OaHceKxqA="
GLOBAL = "whsec_" + base64.b64encode(b"global-secret-for-unit-test").decode()
OWN = "whsec_" + base64.b64encode(b"own-secret-for-a-unit-test-0").decode()


def test_sealed_values_open_with_any_listed_key_and_plain_ones_pass() -> None:
    old = sealing.Sealer((OLD_KEY,))
    sealed = old.seal("Bearer t")
    assert sealed.startswith(sealing.PREFIX) and "Bearer" not in sealed and sealed != old.seal("Bearer t")
    # The key changed, the old one kept second: old values still open, new ones use the first.
    both = sealing.Sealer((KEY, OLD_KEY))
    assert both.open(sealed) == "Bearer t"
    assert sealing.Sealer((KEY,)).open(both.seal("x")) == "x"
    assert both.open("plain value") == "plain value"
    for without in (sealing.Sealer((KEY,)), sealing.Sealer(())):
        with pytest.raises(sealing.Unopenable) as refused:
            without.open(sealed)
        assert sealed not in str(refused.value)
    # No key: nothing sealed.
    assert sealing.Sealer(()).seal("v") == "v" and not sealing.Sealer(()).active


def test_delivery_configs_seal_and_open_their_header_values_only() -> None:
    sealer = sealing.Sealer((KEY,))
    config = {"type": "webhook", "webhook_url": "https://h/x", "headers": {"A": "1", "B": "2"}}
    stored = sealer.seal_headers(config)
    assert stored["webhook_url"] == "https://h/x" and all(map(sealing.is_sealed, stored["headers"].values()))
    assert sealer.seal_headers(stored) == stored  # never sealed twice
    assert sealer.open_headers(stored) == config
    assert not sealing.still_sealed(sealer.open_headers(stored))
    unopened = sealing.Sealer((OLD_KEY,)).open_headers(stored)
    assert sealing.still_sealed(unopened)
    assert sealer.seal_headers({"type": "none"}) == {"type": "none"}


@pytest.mark.parametrize("value", ["not-a-key", f"{KEY},short", ","])
def test_a_bad_secrets_key_stops_the_settings(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        fast_settings("sqlite+aiosqlite://", secrets_key=value)
    assert "SECRETS_KEY" in str(refused.value).upper()
    assert "Fernet key" in str(refused.value) or "holds no key" in str(refused.value)


def test_blank_secrets_key_means_none() -> None:
    assert fast_settings("sqlite+aiosqlite://", secrets_key="").secrets_key is None
    assert fast_settings("sqlite+aiosqlite://", secrets_key=f" {KEY} , {OLD_KEY}").secrets_key


@pytest.mark.parametrize(
    ("secrets", "signing"),
    [
        ((), {GLOBAL}),
        ((OWN,), {OWN}),
        ((OWN, GLOBAL_SECRET), {OWN, GLOBAL}),
        ((GLOBAL_SECRET, OWN), {OWN, GLOBAL}),
    ],
)
async def test_the_channel_signs_with_every_secret_of_the_message(
    secrets: tuple[str, ...], signing: set[str]
) -> None:
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite://", webhook_secret=GLOBAL))
    try:
        body = b'{"custom_id":"c"}'
        message = Message(
            "dlv_1", "c", 1, body, {"type": "webhook", "webhook_url": "https://h/"}, "", secrets
        )
        headers = channel.headers(message, datetime.now(UTC))
    finally:
        await channel.close()
    assert len(headers["webhook-signature"].split(" ")) == len(signing)
    for secret in (GLOBAL, OWN):
        assert verifies(secret, body, headers) == (secret in signing)


def test_which_secrets_a_destination_signs_with_in_and_after_its_overlap() -> None:
    sealer, lost = sealing.Sealer((KEY,)), sealing.Sealer((OLD_KEY,))
    now = datetime.now(UTC)
    soon, gone = now + timedelta(hours=1), now - timedelta(seconds=1)

    def row(current: str | None, previous: str | None = None, until: datetime | None = None) -> Any:
        return SimpleNamespace(signing_secret=current, previous_secret=previous, previous_secret_until=until)

    own = sealer.seal(OWN)
    assert signing(row(own, None, soon), sealer, now) == (OWN, GLOBAL_SECRET)  # first own secret
    assert signing(row(own, None, gone), sealer, now) == (OWN,)  # its overlap over
    assert signing(row(None, own, soon), sealer, now) == (GLOBAL_SECRET, OWN)  # cleared, overlapping
    assert signing(row(None, own, gone), sealer, now) == ()  # the global one alone
    assert signing(row(OWN), sealer, now) == (OWN,)  # stored before a key was set
    # A previous secret no key opens is left out (rotating away from a lost key signs at once);
    # a current one is passed on sealed, and the channel refuses to send with it.
    assert signing(row(own, lost.seal(GLOBAL), soon), sealer, now) == (OWN,)
    [unopened] = signing(row(lost.seal(OWN)), sealer, now)
    assert sealing.is_sealed(unopened)


async def test_the_channel_sends_nothing_it_could_not_open() -> None:
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite://", webhook_secret=GLOBAL))
    sealed = sealing.Sealer((OLD_KEY,)).seal(OWN)
    target = {"type": "webhook", "webhook_url": "http://127.0.0.1:9/"}  # nothing listens: never reached
    try:
        for message in (
            Message("dlv_1", "c", 1, b"{}", target, "", (sealed,)),
            Message("dlv_1", "c", 1, b"{}", {**target, "headers": {"Authorization": sealed}}),
        ):
            result = await channel.send(message)
            assert result.outcome == "retryable_failure" and result.http_status is None
            assert result.error is not None and "SECRETS_KEY" in result.error and sealed not in result.error
    finally:
        await channel.close()
