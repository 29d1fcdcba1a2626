"""API keys created in the UI: create (the key is shown once), list, revoke, and keep each
process's `ApiKeys` in step with the table (revocations reach every replica within seconds)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.rules import owners
from app.core.rules.access import ApiKeys, digest
from app.core.rules.errors import InvalidInput, NotFound, Problem
from app.db.models import ApiKey, Owner, UiSession
from app.db.session import Database
from app.ground.clock import utcnow

log = logging.getLogger(__name__)

KEY_PREFIX = "bg_"
REFRESH_SECONDS = 5.0
NAME_MAX = 100


async def create(db: Database, keys: ApiKeys, name: str, team: str = "") -> tuple[ApiKey, str]:
    """A new key named `name`, of `team` ('' for an admin key): its row and the key itself, which
    is never available again."""
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        detail = f"Give the key a name of 1 to {NAME_MAX} characters."
        raise InvalidInput(Problem("invalid_key_name", "Invalid name", detail))
    team = owners.checked_name(team, "/team") if team.strip() else ""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, digest=digest(key), prefix=key[:10], owner=team, created_at=utcnow())
    async with db.transaction() as session:
        session.add(row)
        if team:
            await ensure_team(session, team)
        await session.flush()
    # This process accepts it at once; others within REFRESH_SECONDS.
    keys.stored[row.digest] = row.id
    if team:
        keys.teams[row.digest] = team
    return row, key


async def ensure_team(session: AsyncSession, name: str) -> Owner:
    """A team's row (its limits), made with none when the team is first named."""
    row = await session.get(Owner, name)
    if row is None:
        now = utcnow()
        row = Owner(name=name, created_at=now, updated_at=now)
        session.add(row)
    return row


async def revoke(db: Database, keys: ApiKeys, key_id: int) -> ApiKey:
    """Revoke a key and end its UI sessions: it stops working here at once, everywhere within
    REFRESH_SECONDS."""
    async with db.transaction() as session:
        row = await session.get(ApiKey, key_id, with_for_update=True)
        if row is None:
            raise NotFound(Problem("not_found", "Not found", f"No API key {key_id}."))
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        # Its UI logins end for good (issue 29), not only while no replica accepts the key.
        await session.execute(
            update(UiSession)
            .where(UiSession.key_digest == row.digest, UiSession.ended_at.is_(None))
            .values(ended_at=row.revoked_at)
        )
    keys.stored.pop(row.digest, None)
    keys.teams.pop(row.digest, None)
    return row


async def listing(db: Database) -> Sequence[ApiKey]:
    """Every key created in the UI, newest first, revoked ones included (for the record)."""
    async with db.transaction() as session:
        return (await session.scalars(select(ApiKey).order_by(ApiKey.id.desc()))).all()


async def refresh(db: Database, keys: ApiKeys, now: datetime | None = None) -> None:
    """Reload the keys not revoked, and write the last-used time of those used since last time."""
    used, keys.used = keys.used, set()
    async with db.transaction() as session:
        if used:
            await session.execute(
                update(ApiKey).where(ApiKey.id.in_(used)).values(last_used_at=now or utcnow())
            )
        active = (
            await session.execute(
                select(ApiKey.digest, ApiKey.id, ApiKey.owner).where(ApiKey.revoked_at.is_(None))
            )
        ).all()
    # Teams first: for a moment a new key may be refused, never accepted as an admin's.
    keys.teams = {row.digest: row.owner for row in active if row.owner}
    keys.stored = {row.digest: row.id for row in active}


async def keep_fresh(db: Database, keys: ApiKeys) -> None:
    """Refresh every REFRESH_SECONDS until cancelled; a failed refresh keeps the last known keys."""
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        try:
            await refresh(db, keys)
        except Exception:  # a passing database error must not stop the refresh for good
            log.warning("could not refresh the API keys; keeping the last known ones", exc_info=True)
