"""A destination's own Standard Webhooks signing secret, and its rotation.

A webhook destination (an origin, `https://host:443`) signs with its own secret when it has one,
else with the global one (WEBHOOK_SECRET, or BATCH_EVENTS_WEBHOOK_SECRET for batch events).
Rotating keeps the secret it replaces signing too until `previous_secret_until`, so a receiver
can switch at its own pace: meanwhile every delivery carries both signatures, space-separated in
`webhook-signature`, as Standard Webhooks allows. A NULL secret stands for the global one, on
either side of a rotation: setting a destination's first secret keeps the global one signing
through the overlap, and clearing it can keep the destination's own one.

Secrets are stored sealed when SECRETS_KEY is set (app.ground.sealing) and never shown again
after the answer that made them: reads say only whether one is set, its first characters and
when the overlap ends.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.base import GLOBAL_SECRET
from app.core.destinations import rows
from app.core.rules import states
from app.core.rules.errors import InvalidInput, Problem, found
from app.db.models import Destination
from app.db.session import Database
from app.ground import sealing
from app.ground.clock import utcnow
from app.ground.config import Settings

SECRET_PREFIX = "whsec_"
# Standard Webhooks: secrets of 24 to 64 bytes; generated ones take 32.
MIN_SECRET_BYTES, MAX_SECRET_BYTES, GENERATED_BYTES = 24, 64, 32
DEFAULT_ROTATE_OVERLAP = 24 * 3600  # seconds the replaced secret keeps signing after a rotation
MAX_OVERLAP = 30 * 86400
# What the deliverer reads of a delivery's destination (joined to its claim) for `signing`.
SIGNING_COLUMNS = (Destination.signing_secret, Destination.previous_secret, Destination.previous_secret_until)
SHOWN_CHARS = 4  # of a secret after its prefix, in reads: enough to tell two apart


@dataclass(frozen=True, slots=True)
class SecretState:
    """What may be shown of a destination's signing secrets (never a secret itself)."""

    destination_id: int
    destination: str
    signing_secret: str  # "own" or "global"
    secret_prefix: str | None  # `whsec_` and its first characters; None for the global one
    encrypted: bool  # stored sealed with SECRETS_KEY
    previous_secret: str | None  # "own" or "global" while it still signs, else None
    previous_secret_until: datetime | None


@dataclass(frozen=True, slots=True)
class Rotated:
    state: SecretState
    secret: str  # the new secret, answered this once


async def rotate(
    db: Database, settings: Settings, destination: int | str, secret: Any = None, overlap_seconds: Any = None
) -> Rotated:
    """Give the destination (its row id, or a webhook URL or origin: the row is made when
    missing) a new secret, `secret` or a generated one; the one it replaces keeps signing for
    `overlap_seconds` (default DEFAULT_ROTATE_OVERLAP; 0 replaces it at once)."""
    new = generate() if secret is None else checked_secret(secret)
    overlap = checked_overlap(DEFAULT_ROTATE_OVERLAP if overlap_seconds is None else overlap_seconds)
    sealer = sealing.sealer(settings.secrets_key)
    async with db.transaction() as session:
        row = await _locked(session, destination)
        now = utcnow()
        _replace(row, sealer.seal(new), overlap, now)
        states.note_destination(session, row, "signing secret rotated" + _overlap_note(row))
        return Rotated(describe(row, sealer, now), new)


def _overlap_note(row: Destination) -> str:
    if row.previous_secret_until is None:
        return ""
    which = "the global one" if row.previous_secret is None else "the one it replaced"
    return f" ({which} signs too until {row.previous_secret_until.isoformat(timespec='seconds')})"


async def clear(
    db: Database, settings: Settings, destination: int | str, overlap_seconds: Any = None
) -> SecretState:
    """Sign the destination's deliveries with the global secret again; its own one keeps
    signing for `overlap_seconds` (default 0: it stops at once)."""
    overlap = checked_overlap(0 if overlap_seconds is None else overlap_seconds)
    sealer = sealing.sealer(settings.secrets_key)
    async with db.transaction() as session:
        row = await _locked(session, destination)
        now = utcnow()
        if row.signing_secret is not None:
            _replace(row, None, overlap, now)
            reason = "signing secret removed: the global one signs" + _overlap_note(row)
            states.note_destination(session, row, reason)
        return describe(row, sealer, now)


async def read(db: Database, settings: Settings, destination_id: int) -> SecretState:
    async with db.transaction() as session:
        row = found(await session.get(Destination, destination_id), "destination", destination_id)
        return describe(row, sealing.sealer(settings.secrets_key), utcnow())


def signing(row: Any, sealer: sealing.Sealer, now: datetime) -> tuple[str, ...]:
    """The secrets a destination row signs with at `now`: its current one, then the previous
    one while its overlap lasts; () when that is only the global one (or the row has none). A
    current secret no key opens is passed on sealed: the channel refuses to sign with it, and
    the attempt is retried. A previous one is left out, so that rotating away from a lost
    SECRETS_KEY delivers at once."""
    secrets = [_opened(row.signing_secret, sealer)]
    if _overlapping(row, now):
        previous = _opened(row.previous_secret, sealer)
        if previous not in secrets and not sealing.is_sealed(previous):
            secrets.append(previous)
    return () if secrets == [GLOBAL_SECRET] else tuple(secrets)


def describe(row: Destination, sealer: sealing.Sealer, now: datetime) -> SecretState:
    overlapping = _overlapping(row, now)
    return SecretState(
        destination_id=row.id,
        destination=row.key,
        signing_secret="own" if row.signing_secret is not None else "global",
        secret_prefix=_shown(row.signing_secret, sealer),
        encrypted=sealing.is_sealed(row.signing_secret),
        previous_secret=("own" if row.previous_secret is not None else "global") if overlapping else None,
        previous_secret_until=row.previous_secret_until if overlapping else None,
    )


def generate() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(GENERATED_BYTES)).decode("ascii")


def checked_secret(secret: Any) -> str:
    """`secret` when it is `whsec_` and the base64 of 24 to 64 bytes; InvalidInput otherwise
    (the message never quotes it)."""
    body = secret.removeprefix(SECRET_PREFIX) if isinstance(secret, str) else None
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True) if body else b""
    except (binascii.Error, ValueError):
        raw = b""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX) or not raw:
        detail = (
            "secret must be 'whsec_' followed by base64 (standard alphabet), or left out to generate one."
        )
    elif not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        detail = f"secret must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {len(raw)}."
    else:
        return secret
    raise InvalidInput(Problem("invalid_secret", "Invalid signing secret", detail, "/secret"))


def checked_overlap(seconds: Any) -> timedelta:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_OVERLAP:
        raise InvalidInput(
            Problem(
                "invalid_overlap",
                "Invalid overlap",
                f"overlap_seconds must be a number from 0 to {MAX_OVERLAP} (30 days).",
                "/overlap_seconds",
            )
        )
    return timedelta(seconds=seconds)


def destination_key(given: Any) -> str:
    """The destination a webhook URL or origin names (`https://host:443`); InvalidInput when it
    is neither. Signing secrets are a webhook's: a RabbitMQ destination has none."""
    try:
        key = rows.key_of(given) if isinstance(given, str) else ""
    except InvalidInput:
        key = ""
    if key.startswith(("http://", "https://")):
        return key
    raise InvalidInput(
        Problem(
            "invalid_destination",
            "Invalid destination",
            "destination must be a webhook URL or origin (e.g. https://example.com:443); "
            "only webhook destinations sign.",
            "/destination",
        )
    )


async def _locked(session: AsyncSession, destination: int | str) -> Destination:
    if isinstance(destination, str):
        return await rows.locked(session, destination_key(destination))
    row = (
        await session.execute(select(Destination).where(Destination.id == destination).with_for_update())
    ).scalar_one_or_none()
    row = found(row, "destination", destination)
    if not row.key.lower().startswith(("http://", "https://")):
        raise InvalidInput(
            Problem(
                "not_a_webhook_destination",
                "Not a webhook destination",
                f"Destination {destination} is {row.key}: only webhook destinations sign.",
            )
        )
    return row


def _replace(row: Destination, sealed: str | None, overlap: timedelta, now: datetime) -> None:
    """Make `sealed` (None: the global one) the current secret; the one it replaces signs too
    until now + overlap."""
    if overlap and sealed != row.signing_secret:
        row.previous_secret, row.previous_secret_until = row.signing_secret, now + overlap
    else:
        row.previous_secret, row.previous_secret_until = None, None
    row.signing_secret = sealed
    row.updated_at = now


def _overlapping(row: Any, now: datetime) -> bool:
    return row.previous_secret_until is not None and row.previous_secret_until > now


def _opened(stored: str | None, sealer: sealing.Sealer) -> str:
    if stored is None:
        return GLOBAL_SECRET
    try:
        return sealer.open(stored)
    except sealing.Unopenable:
        return stored


def _shown(stored: str | None, sealer: sealing.Sealer) -> str | None:
    if stored is None:
        return None
    opened = _opened(stored, sealer)
    if sealing.is_sealed(opened):
        return None  # no key opens it
    return opened[: len(SECRET_PREFIX) + SHOWN_CHARS]
