"""Failing destinations: where deliveries are retrying now, for /health and the dashboard.

A receiver that is down shows as deliveries in `retrying` whose last attempt failed. One query
reads the last attempt of at most SAMPLE retrying deliveries (the soonest due, along the
(status, next_attempt_at) index), so its cost does not grow with the outbox; they are grouped
here by destination. A webhook destination is only host:port: a URL's path and query can carry a
receiver's token, and /health answers without a key.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import and_, select

from app.core.read.cache import per_database
from app.db.models import Delivery, DeliveryAttempt
from app.db.session import Database
from app.ground.statuses import DeliveryStatus

SAMPLE = 1000  # retrying deliveries looked at, at most
TOP = 10  # destinations shown, the most retrying first
ERROR_CHARS = 200
DEFAULT_PORTS = {"http": 80, "https": 443}
URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


@dataclass(frozen=True, slots=True)
class FailingDestination:
    """One destination with deliveries retrying, and how its latest attempt failed."""

    channel: str  # webhook or rabbitmq
    destination: str  # host:port, or "queue <name>" / "exchange <name>"
    retrying: int  # deliveries retrying (counted among the SAMPLE soonest due)
    last_failure_at: datetime
    last_error: str | None


@per_database
async def failing_destinations(db: Database) -> list[FailingDestination]:
    """The TOP destinations with deliveries retrying, at most CACHE_SECONDS old."""
    last = DeliveryAttempt
    stmt = (
        select(
            Delivery.channel,
            Delivery.target["webhook_url"].as_string(),
            Delivery.target["rabbitmq_queue"].as_string(),
            Delivery.target["rabbitmq_exchange"].as_string(),
            last.started_at,
            last.error,
        )
        # The delivery's latest attempt: attempts are numbered up to total_attempts.
        .join(last, and_(last.delivery_id == Delivery.id, last.number == Delivery.total_attempts))
        .where(Delivery.status == DeliveryStatus.RETRYING)
        .order_by(Delivery.next_attempt_at)
        .limit(SAMPLE)
    )
    async with db.transaction() as session:
        rows = (await session.execute(stmt)).all()
    counts: Counter[tuple[str, str]] = Counter()
    latest: dict[tuple[str, str], tuple[datetime, str | None]] = {}
    for channel, url, queue, exchange, at, error in rows:
        key = (channel, destination_of(url, queue, exchange))
        counts[key] += 1
        if key not in latest or at > latest[key][0]:
            latest[key] = (at, error)
    found = [
        FailingDestination(*key, n, latest[key][0], safe_error(latest[key][1])) for key, n in counts.items()
    ]
    return sorted(found, key=lambda d: (-d.retrying, -d.last_failure_at.timestamp()))[:TOP]


def destination_of(url: str | None, queue: str | None, exchange: str | None) -> str:
    """What the operator needs to know where deliveries go, and nothing that may be secret."""
    if url:
        return host_port(url)
    if queue:
        return f"queue {queue}"
    return f"exchange {exchange}" if exchange else "unknown"


def host_port(url: str) -> str:
    """host:port of a URL, without user info, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "unknown"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def safe_error(error: str | None) -> str | None:
    """An attempt's error, shortened, with any URL in it cut to host:port."""
    if error is None:
        return None
    return URL_IN_TEXT.sub(lambda m: host_port(m.group(0)), error)[:ERROR_CHARS]
