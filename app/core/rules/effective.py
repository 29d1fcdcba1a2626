"""Effective settings: the environment's, with the fields an operator changed at runtime.

The environment gives the defaults; a row in `settings` overrides one field. Values are checked
by the same pydantic constraints as the environment, so the UI cannot store what startup would
refuse. Workers re-read the table every few seconds, so every replica follows an edit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_origin

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, select

from app.core.rules.errors import InvalidInput, Problem
from app.db.models import Setting
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.config import Settings
from app.ground.retry_schedule import exponential_schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Editable:
    name: str
    group: str
    help: str
    json: bool = False  # edited as JSON text (a table), not a single value


# What the settings page offers, in its order; each field's help is its description in Settings.
EDITABLE_GROUPS = {
    "Batch limits": ("batch_max_requests", "batch_max_bytes", "local_batch_max_age_seconds"),
    "Retry policy": ("delivery_retry_schedule", "delivery_max_attempts"),
    "OpenAI": (
        "openai_batch_max_age_seconds",
        "openai_token_limits",
        "openai_token_limit_fallback",
        "openai_prices",
    ),
    "Anthropic": ("anthropic_prices",),
}
EDITABLE = tuple(
    Editable(
        name,
        group,
        Settings.model_fields[name].description or "",
        json=get_origin(Settings.model_fields[name].annotation) is dict,
    )
    for group, names in EDITABLE_GROUPS.items()
    for name in names
)
JSON_NAMES = frozenset(e.name for e in EDITABLE if e.json)
NAMES = frozenset(e.name for e in EDITABLE)


async def load(db: Database) -> dict[str, Any]:
    """The stored overrides, by field name."""
    async with db.transaction() as session:
        return {row.name: row.value for row in (await session.scalars(select(Setting))).all()}


def apply(base: Settings, overrides: Mapping[str, Any]) -> Settings:
    """`base` with the overrides applied; a stored value that no longer validates is skipped."""
    settings = base.model_copy()
    for name, value in _upgraded(base, overrides).items():
        if name not in NAMES:
            continue
        try:
            Settings.__pydantic_validator__.validate_assignment(settings, name, value)
        except ValidationError as exc:
            log.warning("ignoring the stored setting %s=%r: %s", name, value, exc.errors()[0]["msg"])
    return settings


# Backoff overrides saved in the UI before DELIVERY_RETRY_SCHEDULE replaced them there.
OLD_BACKOFF = ("delivery_backoff_base_seconds", "delivery_backoff_max_seconds")


def _upgraded(base: Settings, overrides: Mapping[str, Any]) -> Mapping[str, Any]:
    """The overrides, with an old backoff override read as the schedule it stands for (as the
    environment's is): an upgrade keeps the policy an operator saved."""
    if "delivery_retry_schedule" in overrides or not any(name in overrides for name in OLD_BACKOFF):
        return overrides
    try:
        first = float(overrides.get(OLD_BACKOFF[0], base.delivery_backoff_base_seconds or 2.0))
        cap = float(overrides.get(OLD_BACKOFF[1], base.delivery_backoff_max_seconds or 3600.0))
        attempts = int(overrides.get("delivery_max_attempts", base.delivery_max_attempts))
    except (TypeError, ValueError):
        return overrides
    return {**overrides, "delivery_retry_schedule": exponential_schedule(first, cap, attempts)}


async def save(db: Database, base: Settings, form: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and store the submitted values; a value equal to the default removes its override.

    Every field is checked before anything is stored, and every problem is reported at once.
    Returns the overrides now stored.
    """
    checked, problems = base.model_copy(), []
    for name, value in form.items():
        if name not in NAMES:
            problems.append(Problem("unknown_setting", "Unknown setting", f"{name!r} is not editable.", name))
            continue
        if name in JSON_NAMES and isinstance(value, str):
            try:
                value = json.loads(value or "{}")
            except ValueError as exc:
                problems.append(
                    Problem("invalid_setting", "Invalid value", f"{name}: not JSON ({exc}).", name)
                )
                continue
        try:
            Settings.__pydantic_validator__.validate_assignment(checked, name, value)
        except ValidationError as exc:
            message = str(exc.errors()[0]["msg"])
            problems.append(Problem("invalid_setting", "Invalid value", f"{name}: {message}.", name))
    if problems:
        raise InvalidInput(*problems)
    now = utcnow()
    async with db.transaction() as session:
        for name in form:
            value = _stored(getattr(checked, name))
            await session.execute(delete(Setting).where(Setting.name == name))
            if value != _stored(getattr(base, name)):
                session.add(Setting(name=name, value=value, updated_at=now))
    return await load(db)


def _stored(value: Any) -> Any:
    """A setting's value as JSON stores it (a table of prices holds models, not dicts)."""
    return TypeAdapter(Any).dump_python(value, mode="json")


def shown(value: Any) -> str:
    """A setting's value as the settings form shows it."""
    return json.dumps(_stored(value)) if isinstance(value, dict) else str(value)


async def reset(db: Database) -> None:
    """Remove every override: the environment's values apply again."""
    async with db.transaction() as session:
        await session.execute(delete(Setting))


class EffectiveSettings:
    """The one owner of the settings in force: the environment's plus the operator's overrides.

    Everything that reads a limit, a retry policy or a price asks `current` (or `fresh()` where
    an await is at hand). An edit in this process applies at once; other replicas follow within
    REFRESH_SECONDS, because whoever asks `fresh()` after that re-reads the table.
    """

    REFRESH_SECONDS = 5.0

    def __init__(self, db: Database, base: Settings) -> None:
        self.db = db
        self.base = base
        self.current = base
        self.stored: dict[str, Any] = {}
        self._read_at = -math.inf
        self._reading = asyncio.Lock()

    async def fresh(self) -> Settings:
        """The settings in force, re-read from the database when older than REFRESH_SECONDS.

        Intake asks on every request: while one caller re-reads, the others go on with the
        settings in force rather than each reading the table again.
        """
        if time.monotonic() - self._read_at >= self.REFRESH_SECONDS and not self._reading.locked():
            await self.refresh()
        return self.current

    async def refresh(self) -> Settings:
        """Re-read the operator's overrides now."""
        async with self._reading:
            self.stored = await load(self.db)
            self.current = apply(self.base, self.stored)
            self._read_at = time.monotonic()
        return self.current

    async def editable(self) -> list[dict[str, Any]]:
        """Each editable setting as the settings form shows it: value in force and default."""
        await self.refresh()
        stored = self.stored
        return [
            {
                "name": e.name,
                "group": e.group,
                "help": e.help,
                "value": shown(getattr(self.current, e.name)),
                "default": shown(getattr(self.base, e.name)),
                "json": e.json,
                "overridden": e.name in stored,
            }
            for e in EDITABLE
        ]

    async def save(self, form: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and store the operator's values (see `save`); they apply here at once."""
        stored = await save(self.db, self.base, form)
        await self.refresh()
        return stored

    async def reset(self) -> None:
        """Drop every override; the environment's values apply here at once."""
        await reset(self.db)
        await self.refresh()
