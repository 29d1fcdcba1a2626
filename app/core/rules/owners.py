"""Who owns what (issue 29): every request, batch and file records the team (its owner) whose API
key created it. A team's keys see and act on only their team's work, and anything else answers as
if it did not exist; an admin key (one in API_KEYS, a UI key with no team, or none at all when no
keys are set) sees everything, and what it creates is owned by no team ('').

Faces learn the caller from the key (app.web.auth, app.ui.login) and hand it to core, which
filters with `visible` and stamps new rows with `caller.owner`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, true
from sqlalchemy.orm import InstrumentedAttribute

from app.core.rules.errors import Forbidden, InvalidInput, Problem

NAME_MAX = 50  # an owner's scope (below) must fit requests.scope's 64 characters
NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{NAME_MAX - 1}}}")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: a team (`owner`), or an admin (owner '')."""

    owner: str = ""

    @property
    def admin(self) -> bool:
        return not self.owner

    @property
    def scope(self) -> str:
        """Where its native custom_ids are unique: a team's never collide with another's (so a
        duplicate answer cannot tell one team about another's requests)."""
        return f"owner:{self.owner}" if self.owner else ""

    def sees(self, owner: str) -> bool:
        return self.admin or owner == self.owner

    def acting_for(self, owner: str | None) -> Caller:
        """An admin addressing a team's work by custom_id (in that team's scope) acts for it; a
        team's key always acts for itself."""
        return Caller(owner) if self.admin and owner else self

    def require_admin(self, what: str) -> None:
        """Refuse a team's key what only an admin may do (destinations, settings, keys, ...)."""
        if not self.admin:
            detail = f"This key belongs to team {self.owner!r}; only an admin key may {what}."
            raise Forbidden(Problem("admin_only", "Admin key required", detail))


ADMIN = Caller()


def visible(column: InstrumentedAttribute[str], caller: Caller) -> ColumnElement[bool]:
    """The WHERE condition of the rows `caller` may see, by their owner `column`."""
    return true() if caller.admin else column == caller.owner


def checked_name(name: str, pointer: str = "/owner") -> str:
    """A team's name as given, or 422: 1-50 letters, digits, '_', '.', '-' (so it fits in URLs)."""
    name = name.strip()
    if NAME.fullmatch(name) is None:
        detail = (
            f"A team name is 1 to {NAME_MAX} letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."
        )
        raise InvalidInput(Problem("invalid_owner", "Invalid team name", detail, pointer))
    return name
