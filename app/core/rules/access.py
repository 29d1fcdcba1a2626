"""Who may call the API: the keys in API_KEYS and those created in the UI, held only as SHA-256
digests. The HTTP faces read the key a request carries and ask `ApiKeys.check`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from app.core.rules.owners import ADMIN, Caller
from app.ground.config import parse_keys


class Refusal(StrEnum):
    """Why a request was refused; the faces word it in their own error shape."""

    MISSING = "missing"  # the request carried no key
    WRONG = "wrong"  # it carried a key this process does not accept


def digest(key: str) -> str:
    """The hex SHA-256 of a key: what is stored and compared, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class ApiKeys:
    """The keys this process accepts: API_KEYS (fixed) and the keys created in the UI (`stored`,
    refreshed from the database by app.core.key_store). No key at all means the API is open.

    Keys are looked up by digest: a hash-table lookup of a SHA-256 says nothing an attacker can
    use about how close a guess was, unlike comparing the keys themselves.
    """

    fixed: frozenset[str] = field(default=frozenset(), repr=False)
    # digest → api_keys.id of each stored key not revoked
    stored: dict[str, int] = field(default_factory=dict, repr=False)
    # digest → its team, of each stored key that has one (a key not here is an admin's)
    teams: dict[str, str] = field(default_factory=dict, repr=False)
    # ids of stored keys used since their last-used time was last written
    used: set[int] = field(default_factory=set, repr=False)

    @classmethod
    def of(cls, configured: str | None) -> ApiKeys:
        return cls(frozenset(digest(key) for key in parse_keys(configured)))

    @property
    def required(self) -> bool:
        return bool(self.fixed or self.stored)

    def known(self, key_digest: str) -> bool:
        """Whether a digest (of a key, or kept in a UI session) belongs to a key accepted now."""
        return key_digest in self.fixed or key_digest in self.stored

    def accepts(self, presented: str) -> bool:
        """Whether `presented` is a key accepted now; notes a stored key's use."""
        return self._accepted(presented) is not None

    def _accepted(self, presented: str) -> str | None:
        """The digest of `presented` if it is a key accepted now (noting a stored key's use)."""
        found = digest(presented)
        if (key_id := self.stored.get(found)) is not None:
            self.used.add(key_id)
            return found
        return found if found in self.fixed else None

    def caller_of(self, key_digest: str) -> Caller:
        """Who a known key (by digest) acts as: its team, or an admin."""
        team = self.teams.get(key_digest)
        return Caller(team) if team else ADMIN

    def check(self, presented: Iterable[str]) -> Caller | Refusal:
        """Who the request acts as (an admin when no keys are configured), or why it is refused."""
        if not self.required:
            return ADMIN
        given = list(presented)
        if not given:
            return Refusal.MISSING
        for key in given:
            if (found := self._accepted(key)) is not None:
                return self.caller_of(found)
        return Refusal.WRONG
