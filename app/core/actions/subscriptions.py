"""The operator's event subscriptions: create, change, list and delete them (app.core.subscriptions
matches events against them). A subscription's URL passes the same checks as every webhook
target (an absolute http(s) URL, the SSRF guard); its event types are known types or families;
its filters name models, backends and origins.

Deleting a subscription deletes its deliveries with it, queued ones included: nobody asked for
them any more.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.core.intake.accept import webhook_url_problem
from app.core.rules.errors import InvalidInput, Problem, found
from app.core.subscriptions import FILTERS, SUBSCRIBABLE
from app.db.models import Subscription
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.config import Settings

FIELDS = ("url", "event_types", "filters", "description", "enabled")
MAX_TYPES, MAX_VALUES, VALUE_MAX_CHARS, DESCRIPTION_MAX_CHARS = 20, 50, 255, 200


def _bad(code: str, field: str, message: str) -> Problem:
    return Problem(code, "Invalid subscription", message, "/" + field)


def _event_types(value: Any) -> list[Problem]:
    if not isinstance(value, list) or not value or len(value) > MAX_TYPES:
        return [
            _bad("invalid_event_types", "event_types", f"event_types is a list of 1 to {MAX_TYPES} types.")
        ]
    unknown = [t for t in value if not isinstance(t, str) or t not in SUBSCRIBABLE]
    if unknown:
        known = ", ".join(sorted(SUBSCRIBABLE))
        return [
            _bad("invalid_event_types", "event_types", f"unknown event types {unknown!r}; known: {known}.")
        ]
    return []


def _filters(value: Any) -> list[Problem]:
    if not isinstance(value, dict):
        return [
            _bad("invalid_filters", "filters", f"filters is an object with lists for {', '.join(FILTERS)}.")
        ]
    problems = []
    for name, values in value.items():
        if name not in FILTERS:
            problems.append(_bad("invalid_filters", f"filters/{name}", f"filters take {', '.join(FILTERS)}."))
        elif (
            not isinstance(values, list)
            or len(values) > MAX_VALUES
            or not all(isinstance(v, str) and 0 < len(v) <= VALUE_MAX_CHARS for v in values)
        ):
            message = f"filters.{name} lists up to {MAX_VALUES} names of 1 to {VALUE_MAX_CHARS} characters."
            problems.append(_bad("invalid_filters", f"filters/{name}", message))
    return problems


def checked(data: Any, settings: Settings) -> dict[str, Any]:
    """A whole subscription's fields, validated (InvalidInput with every problem)."""
    if not isinstance(data, dict):
        raise InvalidInput(_bad("invalid_value", "", "A subscription is a JSON object."))
    problems = [
        _bad("unknown_field", name, f"'{name}' is not a subscription field.")
        for name in data
        if name not in FIELDS
    ]
    if (url_problem := webhook_url_problem(data.get("url"), settings, "/url")) is not None:
        problems.append(url_problem)
    problems += _event_types(data.get("event_types"))
    problems += _filters(data.get("filters", {}))
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX_CHARS:
        problems.append(
            _bad(
                "invalid_value",
                "description",
                f"description is text up to {DESCRIPTION_MAX_CHARS} characters.",
            )
        )
    if not isinstance(data.get("enabled", True), bool):
        problems.append(_bad("invalid_value", "enabled", "enabled is true or false."))
    if problems:
        raise InvalidInput(*problems)
    filters = {name: list(values) for name, values in data.get("filters", {}).items() if values}
    return {
        "url": data["url"],
        "event_types": list(dict.fromkeys(data["event_types"])),
        "filters": filters,
        "description": description,
        "enabled": data.get("enabled", True),
    }


async def create(db: Database, settings: Settings, data: Any) -> Subscription:
    fields = checked(data, settings)
    now = utcnow()
    async with db.transaction() as session:
        row = Subscription(**fields, created_at=now, updated_at=now)
        session.add(row)
        await session.flush()
    return row


async def change(db: Database, settings: Settings, subscription_id: int, data: Any) -> Subscription:
    """Change the fields `data` names (the others stay), validated as a whole."""
    async with db.transaction() as session:
        row = found(
            await session.get(Subscription, subscription_id, with_for_update=True),
            "subscription",
            subscription_id,
        )
        current = {name: getattr(row, name) for name in FIELDS}
        fields = checked({**current, **data} if isinstance(data, dict) else data, settings)
        for name, value in fields.items():
            setattr(row, name, value)
        row.updated_at = utcnow()
    return row


async def delete(db: Database, subscription_id: int) -> None:
    """Delete a subscription and its deliveries (ON DELETE CASCADE)."""
    async with db.transaction() as session:
        row = found(
            await session.get(Subscription, subscription_id, with_for_update=True),
            "subscription",
            subscription_id,
        )
        await session.delete(row)


async def listing(db: Database) -> list[Subscription]:
    async with db.transaction() as session:
        return list((await session.scalars(select(Subscription).order_by(Subscription.id))).all())


async def one(db: Database, subscription_id: int) -> Subscription:
    async with db.transaction() as session:
        return found(await session.get(Subscription, subscription_id), "subscription", subscription_id)
