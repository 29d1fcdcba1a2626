"""UI logins kept on the server (issue 29): the browser's cookie carries only a random token, and
its row in `ui_sessions` says which key logged in and whether the login still holds. Logout and
key revocation end the row, so a copied cookie stops opening the UI everywhere.

Each process remembers a checked session for CACHE_SECONDS, so a UI page costs a database read
only that often per session: another replica may still honour a logged-out cookie that long; the
process that handled the logout (or revocation) refuses it at once.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, update

from app.core.rules.access import digest
from app.db.models import UiSession
from app.db.session import Database
from app.ground.clock import utcnow

LIFETIME = timedelta(days=7)  # a login ends this long after it began, however busy
CACHE_SECONDS = 5.0  # how long a replica trusts a session it checked (logout reaches it after)
SEEN_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often per session
ENDED_KEPT_SECONDS = 60.0  # logouts remembered here, longer than any check in flight takes
CACHE_MAX = 10_000  # live sessions remembered per process before the stale ones are dropped


@dataclass(frozen=True, slots=True)
class Checked:
    key_digest: str
    at: float  # time.monotonic() of the database read


@dataclass
class UiSessions:
    """This process's view of the UI logins: starts, ends and checks them against the table."""

    idle: timedelta  # UI_SESSION_IDLE_MINUTES
    checked: dict[str, Checked] = field(default_factory=dict, repr=False)  # token digest → check
    # token digest → time.monotonic() of its logout here: a check that read the row before the
    # logout committed must not cache it afterwards
    ended: dict[str, float] = field(default_factory=dict, repr=False)

    async def start(self, db: Database, key_digest: str) -> str:
        """A new login with the key of `key_digest`: the token for the cookie (kept only hashed)."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        async with db.transaction() as session:
            # Logins are rare: the rows that can no longer open anything go now.
            await session.execute(delete(UiSession).where(self._dead(now)))
            row = UiSession(id=digest(token), key_digest=key_digest, created_at=now, last_seen_at=now)
            session.add(row)
        self.checked[row.id] = Checked(key_digest, time.monotonic())
        return token

    async def end(self, db: Database, token: str) -> None:
        """Logout: the token opens nothing more, here at once, elsewhere within CACHE_SECONDS."""
        found = digest(token)
        at = time.monotonic()
        self.ended = {k: t for k, t in self.ended.items() if at - t < ENDED_KEPT_SECONDS}
        self.ended[found] = at
        self.checked.pop(found, None)
        async with db.transaction() as session:
            await session.execute(
                update(UiSession)
                .where(UiSession.id == found, UiSession.ended_at.is_(None))
                .values(ended_at=utcnow())
            )

    async def key_of(self, db: Database, token: str) -> str | None:
        """The digest of the key a live session logged in with; None if it was ended, expired or
        never existed."""
        found = digest(token)
        if found in self.ended:
            return None
        if (hit := self.checked.get(found)) is not None and time.monotonic() - hit.at < CACHE_SECONDS:
            return hit.key_digest
        self.checked.pop(found, None)
        now = utcnow()
        async with db.transaction() as session:
            row = await session.get(UiSession, found)
            if row is None or row.ended_at is not None or self._expired(row, now):
                return None
            if now - row.last_seen_at >= SEEN_EVERY:
                row.last_seen_at = now
            key_digest = row.key_digest
        if found in self.ended:  # logged out here while the row was being read
            return None
        self._remember(found, key_digest)
        return key_digest

    def _remember(self, found: str, key_digest: str) -> None:
        at = time.monotonic()
        if len(self.checked) >= CACHE_MAX:
            self.checked = {k: v for k, v in self.checked.items() if at - v.at < CACHE_SECONDS}
        self.checked[found] = Checked(key_digest, at)

    def _expired(self, row: UiSession, now: datetime) -> bool:
        return now - row.created_at >= LIFETIME or now - row.last_seen_at >= self.idle

    def _dead(self, now: datetime) -> ColumnElement[bool]:
        return or_(
            UiSession.ended_at.is_not(None),
            UiSession.created_at <= now - LIFETIME,
            UiSession.last_seen_at <= now - self.idle,
        )
