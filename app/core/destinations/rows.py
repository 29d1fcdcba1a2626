"""Finding and making destination rows; a destination is named by its key (deliveries.destination)."""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.rules.errors import InvalidInput, Problem
from app.db.models import Destination
from app.ground.clock import utcnow
from app.ground.statuses import BreakerState
from app.net.destinations import DESTINATION_MAX, destination_of


async def ensure(session: AsyncSession, keys: Collection[str]) -> None:
    """Make the rows of the destinations in `keys` that have none yet (replicas may race: the
    key is unique, and the loser's insert does nothing)."""
    keys = sorted({key for key in keys if key})
    if not keys:
        return
    now = utcnow()
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(Destination)
        .values(
            [
                {
                    "key": key,
                    "breaker": BreakerState.CLOSED,
                    "consecutive_failures": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for key in keys
            ]
        )
        .on_conflict_do_nothing(index_elements=["key"])
    )


async def locked(session: AsyncSession, key: str) -> Destination:
    """The destination `key`, made when missing, locked for the rest of the transaction."""
    await ensure(session, [key])
    row = (
        await session.execute(select(Destination).where(Destination.key == key).with_for_update())
    ).scalar_one()
    return row


# What names a destination: a webhook URL with a host, or a RabbitMQ queue or exchange by name
# (also the API's schema for it).
DESTINATION_PATTERN = r"^(https?://[^/?#\s]+|rabbitmq:(queue|exchange)/\S)"


def key_of(given: str) -> str:
    """A destination's key from what an operator gives: the key itself (`https://host:443`,
    `rabbitmq:queue/name`, `rabbitmq:exchange/name`) or any webhook URL of it."""
    given = given.strip()
    if re.match(DESTINATION_PATTERN, given, re.IGNORECASE) is None or not _parses(given):
        raise InvalidInput(
            Problem(
                "invalid_destination",
                "Unknown destination",
                "a destination is a webhook URL or origin (https://host:port), or "
                "rabbitmq:queue/<name> or rabbitmq:exchange/<name>",
                "/destination",
            )
        )
    if given.lower().startswith("rabbitmq:"):
        return given[:DESTINATION_MAX]
    return destination_of({"type": "webhook", "webhook_url": given})


def _parses(given: str) -> bool:
    """A RabbitMQ key, or a URL whose host and port can be read (a bad port or IPv6 bracket
    raises only when read)."""
    if given.lower().startswith("rabbitmq:"):
        return True
    try:
        parts = urlsplit(given)
        parts.port  # noqa: B018
    except ValueError:
        return False
    return bool(parts.hostname)
