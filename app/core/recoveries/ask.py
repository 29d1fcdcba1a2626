"""Asking for a recovery or a replay (validated, idempotent while it runs), and cancelling one.

Idempotent: a recovery that is queued or running holds its `active_key` (unique), made of what
was asked; asking again for the same thing answers that one instead of starting another.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.intake import accept as intake
from app.core.recoveries import scope
from app.core.rules import leases, states
from app.core.rules.errors import Conflict, InvalidInput, Problem, found
from app.db.models import Batch, Recovery
from app.db.session import Database
from app.ground import sealing
from app.ground.clock import utcnow
from app.ground.config import Settings
from app.ground.statuses import RecoveryKind, RecoveryStatus

_FIELDS = {
    RecoveryKind.RECOVER: {"kind", "destination", "since", "until"},
    RecoveryKind.REPLAY: {"kind", "batch_id", "since", "until", "delivery_config"},
}


@dataclass(frozen=True)
class Asked:
    recovery: Recovery
    created: bool  # False: the same one was already queued or running, and this is it


def _problem(code: str, detail: str, pointer: str) -> InvalidInput:
    return InvalidInput(Problem(code, "Invalid recovery", detail, pointer))


def _time(data: dict[str, Any], name: str, required: bool) -> datetime | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _problem(
            "invalid_time", f"'{name}' must be an ISO 8601 time, e.g. 2026-12-07T10:00:00Z.", f"/{name}"
        )
    try:
        at = datetime.fromisoformat(value)
        # A time without a zone is UTC; one with a zone is kept as UTC (a time near year 1 or
        # 9999 may not convert: refused as any other bad time).
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _problem(
            "invalid_time", f"'{name}' is not an ISO 8601 time: {value[:40]!r}.", f"/{name}"
        ) from None


def _common(data: Any) -> tuple[RecoveryKind, datetime | None, datetime | None]:
    if not isinstance(data, dict):
        raise _problem("invalid_body", "The body must be a JSON object.", "")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise _problem("invalid_kind", "'kind' must be 'recover' or 'replay'.", "/kind")
    kind = RecoveryKind(kind)
    if unknown := sorted(set(data) - _FIELDS[kind]):
        raise _problem("unknown_field", f"A {kind} takes no {unknown[0]!r}.", f"/{unknown[0]}")
    since = _time(data, "since", required=kind == RecoveryKind.RECOVER or data.get("batch_id") is None)
    until = _time(data, "until", required=False)
    if since is not None and until is not None and until <= since:
        raise _problem("invalid_range", "'until' must come after 'since'.", "/until")
    return kind, since, until


def parse(data: Any, settings: Settings) -> Recovery:
    """A new, unsaved recovery from a request body, or InvalidInput naming what is wrong."""
    kind, since, until = _common(data)
    recovery = Recovery(kind=kind, since=since, until=until, last_id=0, cursor=0, total=0, done=0)
    if kind == RecoveryKind.RECOVER:
        destination = data.get("destination")
        if not isinstance(destination, str) or not 0 < len(destination) <= 300:
            raise _problem(
                "invalid_destination",
                "'destination' must be a destination key (as deliveries show it), e.g. "
                "'https://hooks.example.com:443' or 'rabbitmq:queue/results'.",
                "/destination",
            )
        recovery.destination = destination
        return recovery
    batch_id = data.get("batch_id")
    if batch_id is not None:
        if isinstance(batch_id, bool) or not isinstance(batch_id, int) or batch_id < 1:
            raise _problem(
                "invalid_batch_id", "'batch_id' must be a batch's id (a positive integer).", "/batch_id"
            )
        if since is not None:
            raise _problem(
                "invalid_scope", "A replay takes a 'batch_id' or a time range, not both.", "/since"
            )
    recovery.batch_id = batch_id
    if "delivery_config" not in data:
        raise _problem(
            "missing_delivery_config", "A replay needs a 'delivery_config' to send to.", "/delivery_config"
        )
    # The same rules as intake's (SSRF guard, allow-lists, RabbitMQ configured).
    target = intake.validate_delivery_config(data["delivery_config"], settings)
    if isinstance(target, list):  # fan-out: each request gets one delivery per replay
        raise _problem(
            "one_target",
            "A replay sends to one destination: ask one replay per destination.",
            "/delivery_config",
        )
    if target["type"] == "none":
        raise _problem(
            "no_target", "A replay must send somewhere: 'none' is not a target.", "/delivery_config/type"
        )
    recovery.target = target
    return recovery


def active_key(recovery: Recovery) -> str:
    """What makes two asks the same: kind, scope and (for a replay) the target."""
    when = "|".join(at.isoformat() if at else "" for at in (recovery.since, recovery.until))
    if recovery.kind == RecoveryKind.RECOVER:
        return f"recover|{recovery.destination}|{when}"
    target = json.dumps(recovery.target, sort_keys=True, separators=(",", ":")).encode()
    return f"replay|{recovery.batch_id or ''}|{when}|{hashlib.sha256(target).hexdigest()}"


async def ask(db: Database, settings: Settings, data: Any, via: str = "api") -> Asked:
    """Start a recovery or replay, or answer the same one already queued or running."""
    recovery = parse(data, settings)
    key = recovery.active_key = active_key(recovery)  # of the plain target: sealing differs each time
    if recovery.target is not None:  # stored with its header values sealed (SECRETS_KEY), as intake does
        recovery.target = sealing.sealer(settings.secrets_key).seal_headers(recovery.target)
    try:
        async with db.transaction() as session:
            if (running := await _active(session, recovery.active_key)) is not None:
                return Asked(running, created=False)
            if recovery.batch_id is not None:
                found(await session.get(Batch, recovery.batch_id), "batch", recovery.batch_id)
            recovery.status, recovery.via, recovery.created_at = RecoveryStatus.QUEUED, via, utcnow()
            await scope.measure(session, recovery)
            session.add(recovery)
            await session.flush()
            states.begin_recovery(session, recovery)
            if recovery.total == 0:  # nothing in its scope: it is over at once
                states.move_recovery(session, recovery, RecoveryStatus.RUNNING)
                states.move_recovery(session, recovery, RecoveryStatus.DONE, "nothing in its scope")
    except IntegrityError:
        # The same ask, made at the same moment by another request, won the unique active_key.
        async with db.transaction() as session:
            running = await _active(session, key)
        if running is None:
            raise
        return Asked(running, created=False)
    return Asked(recovery, created=True)


async def _active(session: AsyncSession, key: str | None) -> Recovery | None:
    running: Recovery | None = await session.scalar(select(Recovery).where(Recovery.active_key == key))
    return running


async def cancel(db: Database, recovery_id: int, via: str = "api") -> Recovery:
    """Stop a queued or running recovery. What it queued before stays queued (those deliveries go
    out as usual); the rest of its scope is left as it is."""
    async with db.transaction() as session:
        # Locked: a chunk in progress ends first, and no chunk starts after this.
        recovery = found(await leases.lock(session, Recovery, recovery_id), "recovery", recovery_id)
        if recovery.status not in states.RECOVERY_ACTIVE:
            raise Conflict(
                Problem(
                    "recovery_not_active",
                    "Recovery has ended",
                    f"Recovery {recovery_id} is {recovery.status}; only a queued or running one "
                    "can be cancelled.",
                )
            )
        states.move_recovery(
            session, recovery, RecoveryStatus.CANCELLED, f"cancelled by the operator (via {via})"
        )
    return recovery
