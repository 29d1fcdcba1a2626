"""Each team's usage and limits (issue 29). Usage is read from the team's own rows: requests for
counts and tokens, batches for spend (batches never mix teams, so a batch's cost is its team's
alone). A team may have a limit on enqueued tokens and a spend budget, both checked at intake.

Enqueued tokens are estimated as body bytes / 4 (OpenAI's rule of thumb), the same measure for
what is queued and for what arrives, so the check costs one indexed sum and no tokenizer on the
intake path. Spend counts the team's batches still kept (RETENTION_DAYS) at batch prices.
A team's figures are read at most every CHECK_SECONDS per process, with what this process
accepted since added: the limits can be passed by what other replicas accept meanwhile.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.key_store import ensure_team
from app.core.rules.errors import Forbidden, InvalidInput, NotFound, Problem, TooMany
from app.core.rules.owners import Caller, checked_name
from app.core.runs.costs import usage_cost
from app.db.models import Batch, Owner, Request
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.config import Settings
from app.ground.statuses import RequestStatus

CHECK_SECONDS = 2.0
LIMITS_SECONDS = 5.0  # how long a process trusts the limits it read (a change reaches it after)
UNFINISHED = (RequestStatus.PENDING, RequestStatus.BATCHED, RequestStatus.PROCESSING)
BYTES_PER_TOKEN = 4
# How long a client is told to wait when its queue is full: work finishes, tokens free up.
FULL_RETRY_AFTER = 30


def tokens_of(body_bytes: int) -> int:
    return math.ceil(body_bytes / BYTES_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class Usage:
    """A team's work and its limits, as /api/owners and the Keys page show them."""

    owner: str
    requests: int
    unfinished: int
    enqueued_tokens: int
    prompt_tokens: int
    completion_tokens: int
    spend_usd: float
    max_enqueued_tokens: int | None
    budget_usd: float | None


async def set_limits(
    db: Database, name: str, max_enqueued_tokens: int | None, budget_usd: float | None
) -> Owner:
    """Set (None: remove) a team's limits; made if the team is new."""
    name = checked_name(name, "/name")
    if max_enqueued_tokens is not None and max_enqueued_tokens < 1:
        raise _invalid("max_enqueued_tokens", "max_enqueued_tokens is at least 1, or null for no limit.")
    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd >= 0):
        raise _invalid("budget_usd", "budget_usd is a number of dollars, 0 or more, or null for no budget.")
    async with db.transaction() as session:
        row = await ensure_team(session, name)
        row.max_enqueued_tokens, row.budget_usd, row.updated_at = max_enqueued_tokens, budget_usd, utcnow()
    _limits(db).read_at = 0.0  # this process applies it at once
    return row


def _invalid(field_name: str, detail: str) -> InvalidInput:
    return InvalidInput(Problem("invalid_limit", "Invalid limit", detail, f"/{field_name}"))


async def usage(db: Database, settings: Settings, caller: Caller) -> list[Usage]:
    """Every team's usage for an admin (no team, '', included), only its own for a team."""
    async with db.transaction() as session:
        if caller.admin:
            named = set((await session.scalars(select(Owner.name))).all())
            seen = set((await session.scalars(select(Request.owner).distinct())).all())
            names = sorted(named | seen | {""})
        else:
            names = [caller.owner]
        return [await _usage_of(session, settings, name) for name in names]


async def usage_of(db: Database, settings: Settings, caller: Caller, name: str) -> Usage:
    """One team's usage: 404 for a team's key asking about another team."""
    if not caller.sees(name):
        raise NotFound(Problem("not_found", "Not found", f"No team {name!r}."))
    async with db.transaction() as session:
        return await _usage_of(session, settings, name)


async def _usage_of(session: AsyncSession, settings: Settings, name: str) -> Usage:
    counted = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(Request.status.in_(UNFINISHED)),
                func.coalesce(func.sum(Request.body_bytes).filter(Request.status.in_(UNFINISHED)), 0),
                func.coalesce(func.sum(Request.prompt_tokens), 0),
                func.coalesce(func.sum(Request.completion_tokens), 0),
            ).where(Request.owner == name)
        )
    ).one()
    limits = await session.get(Owner, name)
    return Usage(
        owner=name,
        requests=counted[0],
        unfinished=counted[1],
        enqueued_tokens=tokens_of(int(counted[2])),
        prompt_tokens=int(counted[3]),
        completion_tokens=int(counted[4]),
        spend_usd=await _spend(session, settings, name),
        max_enqueued_tokens=limits.max_enqueued_tokens if limits else None,
        budget_usd=limits.budget_usd if limits else None,
    )


async def _spend(session: AsyncSession, settings: Settings, name: str) -> float:
    rows = await session.execute(
        select(
            Batch.backend,
            Batch.model,
            func.sum(Batch.input_tokens),
            func.sum(Batch.cached_tokens),
            func.sum(Batch.output_tokens),
        )
        .where(Batch.owner == name)
        .group_by(Batch.backend, Batch.model)
    )
    total = 0.0
    for backend, model, input_tokens, cached, output in rows:
        cost = usage_cost(
            settings, backend, model, int(input_tokens or 0), int(cached or 0), int(output or 0)
        )
        total += cost.batch if cost else 0.0
    return total


@dataclass
class _Seen:
    at: float  # time.monotonic() of the read
    enqueued_bytes: int  # read, plus what this process accepted since
    spend_usd: float


@dataclass
class _Limits:
    """This process's copy of every team's limits, and the figures its checks last read."""

    read_at: float = 0.0
    by_team: dict[str, tuple[int | None, float | None]] = field(default_factory=dict)
    seen: dict[str, _Seen] = field(default_factory=dict)

    async def of(self, db: Database, team: str) -> tuple[int | None, float | None]:
        if time.monotonic() - self.read_at > LIMITS_SECONDS:
            async with db.transaction() as session:
                rows = await session.execute(select(Owner.name, Owner.max_enqueued_tokens, Owner.budget_usd))
                self.by_team = {name: (tokens, budget) for name, tokens, budget in rows}
            self.read_at = time.monotonic()
        return self.by_team.get(team, (None, None))


_LIMITS: weakref.WeakKeyDictionary[Database, _Limits] = weakref.WeakKeyDictionary()


def _limits(db: Database) -> _Limits:
    found = _LIMITS.get(db)
    if found is None:
        found = _LIMITS[db] = _Limits()
    return found


async def limited(db: Database, caller: Caller) -> bool:
    """Whether `admit` can refuse `caller`'s work: a team with a token limit or a budget."""
    if caller.admin:
        return False
    max_tokens, budget = await _limits(db).of(db, caller.owner)
    return max_tokens is not None or budget is not None


async def admit(db: Database, settings: Settings, caller: Caller, body_bytes: Sequence[int]) -> None:
    """Refuse (429) work a team's limits do not allow: its enqueued tokens would pass
    max_enqueued_tokens, or its spend has reached budget_usd. Admins have no limits."""
    if caller.admin:
        return
    max_tokens, budget = await _limits(db).of(db, caller.owner)
    if max_tokens is None and budget is None:
        return
    seen = await _seen(db, settings, caller.owner)
    if budget is not None and seen.spend_usd >= budget:
        detail = f"Team {caller.owner!r} has spent ${seen.spend_usd:.4f} of its ${budget:.4f} budget."
        # Not a 429: waiting does not help; an admin raises the budget (or retention frees it).
        raise Forbidden(Problem("budget_exceeded", "Budget exceeded", detail))
    adding = sum(body_bytes)
    if max_tokens is not None and tokens_of(seen.enqueued_bytes + adding) > max_tokens:
        detail = (
            f"Team {caller.owner!r} has about {tokens_of(seen.enqueued_bytes):,} tokens enqueued; "
            f"this would add about {tokens_of(adding):,}, past its limit of {max_tokens:,}. "
            "Send it again once some of its work has finished."
        )
        raise TooMany(FULL_RETRY_AFTER, Problem("enqueued_token_limit", "Enqueued token limit", detail))
    seen.enqueued_bytes += adding


async def _seen(db: Database, settings: Settings, team: str) -> _Seen:
    limits = _limits(db)
    found = limits.seen.get(team)
    if found is not None and time.monotonic() - found.at < CHECK_SECONDS:
        return found
    async with db.transaction() as session:
        queued = await session.scalar(
            select(func.coalesce(func.sum(Request.body_bytes), 0)).where(
                Request.owner == team, Request.status.in_(UNFINISHED)
            )
        )
        spend = await _spend(session, settings, team)
    limits.seen[team] = found = _Seen(time.monotonic(), int(queued or 0), spend)
    return found
