"""Leases: how a step claims rows so that replicas never do the same work twice.

On PostgreSQL the claim is `SELECT … FOR UPDATE SKIP LOCKED` followed by stamping
`leased_until`/`leased_by`; a lease that runs out (its holder died) can be taken over. On SQLite
one process owns the database, and the same statements simply run serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypedDict, TypeVar, Unpack

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.session import Database, rows_changed
from app.ground import metrics
from app.ground.clock import utcnow

log = logging.getLogger(__name__)


class HasStatus(Protocol):
    """A row with a status column (a batch, a request, a delivery)."""

    @property
    def status(self) -> str: ...


StatusRow = TypeVar("StatusRow", bound=HasStatus)


@dataclass(frozen=True)
class Hold:
    """One claim of a row: the process holding its lease, and a token fresh to this claim. The
    token tells two runs of one process apart (a row claimed again after its lease ran out), so
    a run that lost its row can be recognised even where the owner's name matches."""

    owner: str
    token: str

    @classmethod
    def new(cls, owner: str) -> Hold:
        return cls(owner, uuid.uuid4().hex)

    def where(self, model: Any) -> ColumnElement[bool]:
        """Rows this claim still holds."""
        return and_(model.leased_by == self.owner, model.lease_token == self.token)

    def holds(self, row: Any) -> bool:
        """Whether a loaded row is still held by this claim."""
        return bool(row.leased_by == self.owner and row.lease_token == self.token)


# The values of an UPDATE that gives a lease back.
RELEASED: dict[str, None] = {"leased_by": None, "leased_until": None}


def release(row: Any) -> None:
    """Give back the lease on a loaded row: its work here is over, anyone may claim it next."""
    row.leased_by = None
    row.leased_until = None


async def lock(
    session: AsyncSession, model: type[StatusRow], row_id: int, *statuses: str
) -> StatusRow | None:
    """Lock one row for the rest of the transaction; None when it is gone or, when `statuses`
    are given, in none of them (the pipeline or an operator moved it meanwhile)."""
    row = await session.get(model, row_id, with_for_update=True)
    if row is None or (statuses and row.status not in statuses):
        return None
    return row


def lease_now(session: AsyncSession) -> Any:
    """Now, as leases count it. On PostgreSQL the database's clock: replicas' own clocks may
    disagree, and a lease must run out at the same moment for all of them. On SQLite (one
    process) this process's clock."""
    return func.now() if session.bind.dialect.name == "postgresql" else utcnow()


def until(session: AsyncSession, seconds: float) -> Any:
    """The end of a lease taken now for `seconds`, by `lease_now`."""
    return lease_now(session) + timedelta(seconds=seconds)


def lease_free(session: AsyncSession, model: Any) -> ColumnElement[bool]:
    """Rows nobody holds: never leased, or the lease ran out."""
    return or_(model.leased_until.is_(None), model.leased_until < lease_now(session))


class ClaimOptions(TypedDict, total=False):
    """`claim`'s optional terms (see `claim_rows`)."""

    order_by: Any
    token: str | None
    keep: Callable[[Any], bool] | None
    columns: Sequence[Any]


async def claim(
    session: AsyncSession,
    model: Any,
    where: list[ColumnElement[bool]],
    owner: str,
    lease_seconds: float,
    limit: int,
    **options: Unpack[ClaimOptions],
) -> list[int]:
    """Lease up to `limit` free rows matching `where`; returns their ids (in `order_by` order).
    With `token` (a Hold's), the rows also record which claim holds them. With `keep`, only the
    rows it keeps are leased (it is given each row found, with `columns`); the others stay free."""
    rows = await claim_rows(session, model, where, owner, lease_seconds, limit, **options)
    return [row.claimed_id for row in rows]


async def claim_rows(
    session: AsyncSession,
    model: Any,
    where: list[ColumnElement[bool]],
    owner: str,
    lease_seconds: float,
    limit: int,
    order_by: Any = None,
    token: str | None = None,
    keep: Callable[[Any], bool] | None = None,
    columns: Sequence[Any] = (),
    outerjoins: Sequence[tuple[Any, ColumnElement[bool]]] = (),
) -> list[Any]:
    """`claim`, answering the rows leased: `claimed_id` (the id), then `columns`, which may come
    from tables `outerjoins` adds (each a table and its ON clause; only `model`'s rows are
    locked). What the claimed work needs is read in the claim's own statement."""
    order = order_by if order_by is not None else model.id
    free = select(model.id).where(*where, lease_free(session, model)).order_by(order).limit(limit)
    free = free.with_for_update(skip_locked=True)
    query = select(model.id.label("claimed_id"), model.leased_by, *columns).select_from(model)
    if outerjoins:
        # The rows are chosen (and locked) first, the joins read for those alone: SQLite would
        # join every due row before its sort and limit.
        for table, on in outerjoins:
            query = query.outerjoin(table, on)
        query = query.where(model.id.in_(free.correlate(None))).order_by(order)
    else:
        query = free.with_only_columns(model.id.label("claimed_id"), model.leased_by, *columns)
    found = (await session.execute(query)).all()
    rows = [row for row in found if keep is None or keep(row)]
    ids = [row.claimed_id for row in rows]
    # A free row that still names an owner is one whose lease ran out: its owner died or stalled.
    if takeovers := sum(1 for row in rows if row.leased_by is not None):
        metrics.LEASE_TAKEOVERS.labels(model.__tablename__).inc(takeovers)
    if ids:
        await session.execute(
            update(model)
            .where(model.id.in_(ids))
            .values(
                leased_until=until(session, lease_seconds),
                leased_by=owner,
                **({"lease_token": token} if token is not None else {}),
            )
            .execution_options(synchronize_session=False)
        )
    return rows


async def renew(
    session: AsyncSession, model: Any, row_id: int, owner: str | Hold, lease_seconds: float
) -> bool:
    """Extend our lease on one row; False when it is no longer ours (with a Hold: this claim's)."""
    ours = owner.where(model) if isinstance(owner, Hold) else model.leased_by == owner
    changed = await rows_changed(
        session,
        update(model)
        .where(model.id == row_id, ours)
        .values(leased_until=until(session, lease_seconds))
        .execution_options(synchronize_session=False),
    )
    return bool(changed)


async def release_all(session: AsyncSession, model: Any, owner: str) -> None:
    """Give back every lease `owner` holds (on shutdown), so the next process starts at once."""
    await session.execute(
        update(model)
        .where(model.leased_by == owner)
        .values(**RELEASED)
        .execution_options(synchronize_session=False)
    )


@contextlib.asynccontextmanager
async def held(
    db: Database, model: Any, row_id: int, owner: str | Hold, lease_seconds: float
) -> AsyncIterator[None]:
    """Renew our lease on one row while the body runs (an upload or a run can outlast a lease).

    When a renewal fails (another process took the row over, or an operator's cancel dropped
    the lease) the body is cancelled, and the `async with` ends quietly: two processes must not
    work on the same row, and the caller carries on with its other rows.
    """
    worker = asyncio.current_task()
    lost = False

    async def renew_until_lost() -> None:
        nonlocal lost
        interval = max(lease_seconds / 3, 0.05)
        renewed_at = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                async with db.transaction() as session:
                    still_ours = await renew(session, model, row_id, owner, lease_seconds)
            except Exception:
                # A passing database error must not end the heartbeat while the work goes on
                # (another process would take the row over and do it twice): try again while
                # the lease lasts, and give the work up only when it may have run out.
                still_ours = time.monotonic() - renewed_at < lease_seconds - interval
                log.warning("could not renew the lease on %s %s", model.__tablename__, row_id, exc_info=True)
            else:
                renewed_at = time.monotonic() if still_ours else renewed_at
            if not still_ours and worker is not None:
                log.warning("lost the lease on %s %s; stopping work on it here", model.__tablename__, row_id)
                lost = True
                worker.cancel()
                return

    heartbeat = asyncio.create_task(renew_until_lost())
    try:
        yield
    except asyncio.CancelledError:
        if not lost or worker is None:
            raise
        worker.uncancel()  # our own cancel: it must not leak into the caller's later awaits
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
