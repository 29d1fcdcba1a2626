"""The one place statuses change: the statuses, their allowed transitions and the functions
that apply them.

Every other module asks this one to move a batch, a request or a delivery. A batch move also
writes a batch_events row, so the UI can show a complete timeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import driver
from app.db.models import (
    Batch,
    BatchEvent,
    Delivery,
    Destination,
    DestinationEvent,
    Recovery,
    RecoveryEvent,
    Request,
    table_of,
)
from app.db.session import rows_changed
from app.ground.clock import utcnow
from app.ground.identity import process_name
from app.ground.statuses import BatchStatus, BreakerState, DeliveryStatus, RecoveryStatus, RequestStatus

# Short names, written one a line so that they are type aliases too (`status: R`).
B = BatchStatus
R = RequestStatus
D = DeliveryStatus

# Where a native request's custom_id is unique: all of them share this one scope. A drop-in
# batch's requests are unique within the batch (their scope is `batch_scope(batch_id)`).
NATIVE_SCOPE = ""


def batch_scope(batch_id: int) -> str:
    return f"batch:{batch_id}"


BATCH_TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    B.BUILDING: frozenset({B.READY, B.CANCELLED}),
    # ready → expired: a drop-in batch whose completion window closed before it ran.
    B.READY: frozenset({B.SUBMITTING, B.CANCELLED, B.EXPIRED}),
    B.SUBMITTING: frozenset({B.PROCESSING, B.READY, B.FAILED}),
    # processing → ready: OpenAI refused the batch for now (token_limit_exceeded); it goes again.
    B.PROCESSING: frozenset({B.COLLECTING, B.CANCELLING, B.FAILED, B.EXPIRED, B.READY}),
    # A remote batch ends done, expired or cancelled only after its files are collected.
    B.COLLECTING: frozenset({B.DONE, B.FAILED, B.EXPIRED, B.CANCELLED}),
    B.CANCELLING: frozenset({B.CANCELLED, B.COLLECTING, B.FAILED}),
    B.DONE: frozenset(),
    B.FAILED: frozenset({B.READY}),
    B.CANCELLED: frozenset(),
    B.EXPIRED: frozenset(),
}

REQUEST_TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    # pending → failed: it passed its complete_by before a batch took it (app.core.deadlines).
    R.PENDING: frozenset({R.BATCHED, R.CANCELLED, R.FAILED}),
    # batched → failed: the batch could not be submitted within its bounded retries.
    R.BATCHED: frozenset({R.PROCESSING, R.PENDING, R.CANCELLED, R.FAILED, R.EXPIRED}),
    # processing → pending: resubmitted in a new batch; → batched: its batch goes again later.
    R.PROCESSING: frozenset({R.SUCCEEDED, R.FAILED, R.PENDING, R.BATCHED, R.CANCELLED, R.EXPIRED}),
    R.SUCCEEDED: frozenset(),
    # An operator retrying a failed batch runs its failed requests again.
    R.FAILED: frozenset({R.BATCHED}),
    R.CANCELLED: frozenset(),
    R.EXPIRED: frozenset(),
}

DELIVERY_TRANSITIONS: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    D.PENDING: frozenset({D.DELIVERED, D.RETRYING, D.DELIVERY_FAILED, D.SUPERSEDED}),
    D.RETRYING: frozenset({D.DELIVERED, D.RETRYING, D.DELIVERY_FAILED, D.PENDING, D.SUPERSEDED}),
    D.DELIVERED: frozenset({D.PENDING}),
    D.DELIVERY_FAILED: frozenset({D.PENDING}),
    D.SUPERSEDED: frozenset(),
}

BREAKER_TRANSITIONS: dict[BreakerState, frozenset[BreakerState]] = {
    # closed → open: failures in a row, or an operator's pause.
    BreakerState.CLOSED: frozenset({BreakerState.OPEN}),
    # open → closed: an operator's resume. open → open: an operator's pause of an open breaker
    # (held until resumed).
    BreakerState.OPEN: frozenset({BreakerState.PROBING, BreakerState.CLOSED, BreakerState.OPEN}),
    # probing → probing: a probe whose answer never came (its process died) goes again.
    BreakerState.PROBING: frozenset({BreakerState.CLOSED, BreakerState.OPEN, BreakerState.PROBING}),
}

Rc = RecoveryStatus

RECOVERY_TRANSITIONS: dict[RecoveryStatus, frozenset[RecoveryStatus]] = {
    # queued → failed: its first chunk could not be done.
    Rc.QUEUED: frozenset({Rc.RUNNING, Rc.CANCELLED, Rc.FAILED}),
    Rc.RUNNING: frozenset({Rc.DONE, Rc.FAILED, Rc.CANCELLED}),
    Rc.DONE: frozenset(),
    Rc.FAILED: frozenset(),
    Rc.CANCELLED: frozenset(),
}
RECOVERY_ACTIVE = (Rc.QUEUED, Rc.RUNNING)

REQUEST_FINISHED = frozenset({R.SUCCEEDED, R.FAILED, R.CANCELLED, R.EXPIRED})
BATCH_TERMINAL = frozenset({B.DONE, B.FAILED, B.CANCELLED, B.EXPIRED})
DELIVERY_DUE = (D.PENDING, D.RETRYING)
DELIVERY_ENDED = (D.DELIVERED, D.DELIVERY_FAILED)
# Moves into these are marked for BATCH_EVENTS_WEBHOOK_URL (app.core.announcements), as is every
# batch's creation: an event consumer follows a batch from start to end. A repeated start
# (processing again after a token_limit_exceeded or a retry) is dropped there, not here.
BATCH_ANNOUNCED = BATCH_TERMINAL | {B.PROCESSING, B.COLLECTING}

# Phase timestamps a batch gets when it enters a status (keyed by str, as a row holds it).
_BATCH_PHASE_COLUMN: dict[str, str] = {
    B.READY: "ready_at",
    B.PROCESSING: "submitted_at",
    **dict.fromkeys(BATCH_TERMINAL, "finished_at"),
}


class TransitionError(ValueError):
    """A status change the transitions table does not allow."""


def check(table: Mapping[Any, frozenset[Any]], from_status: str, to_status: str) -> None:
    """Raise TransitionError unless the table allows from_status → to_status."""
    if to_status not in table.get(from_status, frozenset()):
        raise TransitionError(f"{from_status} → {to_status} is not an allowed transition")


def begin_batch(session: AsyncSession, batch: Batch, reason: str | None = None) -> None:
    """Record the creation of a batch (its first event, from nothing to its initial status),
    announced as its creation. A batch created ended (a drop-in batch refused at validation) also
    gets an event for its end, so a consumer sees it start and end like any other."""
    now = utcnow()
    session.add(
        BatchEvent(
            batch_id=batch.id,
            from_status=None,
            to_status=batch.status,
            reason=reason,
            at=now,
            announce=True,
            worker=process_name(),
        )
    )
    if batch.status in BATCH_TERMINAL:
        session.add(
            BatchEvent(
                batch_id=batch.id,
                from_status=batch.status,
                to_status=batch.status,
                reason="ended as it was created",
                at=now,
                announce=True,
                worker=process_name(),
            )
        )


def move_batch(session: AsyncSession, batch: Batch, to_status: str, reason: str | None = None) -> None:
    """Move a loaded batch to `to_status` and write its event row (flushed with the session)."""
    check(BATCH_TRANSITIONS, batch.status, to_status)
    now = utcnow()
    session.add(
        BatchEvent(
            batch_id=batch.id,
            from_status=batch.status,
            to_status=to_status,
            reason=reason,
            at=now,
            announce=to_status in BATCH_ANNOUNCED,
            worker=process_name(),
        )
    )
    batch.status = to_status
    batch.status_changed_at = now
    if column := _BATCH_PHASE_COLUMN.get(to_status):
        setattr(batch, column, now)


def note_batch(session: AsyncSession, batch: Batch, reason: str) -> None:
    """Put an operator action that changes no status (a redelivery) on the batch's timeline."""
    session.add(
        BatchEvent(
            batch_id=batch.id,
            from_status=batch.status,
            to_status=batch.status,
            reason=reason,
            at=utcnow(),
            worker=process_name(),
        )
    )


async def move_requests(
    session: AsyncSession,
    ids: Sequence[int],
    from_status: str,
    to_status: str,
    **values: Any,
) -> int:
    """Move the requests in `ids` that are still in `from_status`; returns how many moved."""
    check(REQUEST_TRANSITIONS, from_status, to_status)
    moved = 0
    for chunk in _chunks(ids, 5000):
        moved += await rows_changed(
            session,
            update(Request)
            .where(Request.id.in_(chunk), Request.status == from_status)
            .values(status=to_status, **values)
            .execution_options(synchronize_session=False),
        )
    return moved


async def set_request_outcomes(
    session: AsyncSession, from_status: str, rows: Sequence[dict[str, Any]]
) -> None:
    """Apply per-request outcomes (each row: id, status and the columns to set) in one statement.

    The caller has locked the rows and checked they are still in `from_status`.
    """
    for row in rows:
        check(REQUEST_TRANSITIONS, from_status, row["status"])
    await _update_each(session, "requests", rows, from_status)


async def set_delivery_outcomes(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Apply per-delivery outcomes in one statement. Each row: id, from_status (as the caller
    locked it), status and the columns to set."""
    for row in rows:
        check(DELIVERY_TRANSITIONS, row["from_status"], row["status"])
    await _update_each(
        session, "deliveries", [{k: v for k, v in r.items() if k != "from_status"} for r in rows]
    )


async def _update_each(
    session: AsyncSession, table: str, rows: Sequence[dict[str, Any]], from_status: str | None = None
) -> None:
    """One executemany UPDATE setting each row's own values, matched on id (and `from_status`),
    through the driver (app.db.driver: SQLAlchemy's per-row binding cost as much as the
    database's work for a chunk of 1,000 results)."""
    if not rows:
        return
    columns = tuple(key for key in rows[0] if key != "id")
    statement = _each_statement(table, columns, from_status is not None)
    if from_status is None:
        await driver.executemany(session, statement, rows)
    else:
        await driver.executemany(session, statement, rows, where_status=from_status)


@driver.cached
def _each_statement(table_name: str, columns: tuple[str, ...], on_status: bool) -> Any:
    table = _TABLES[table_name]
    where = [table.c.status == bindparam(driver.PREFIX + "where_status")] if on_status else []
    return (
        update(table)
        .where(table.c.id == bindparam(driver.PREFIX + "id"), *where)
        .values({column: bindparam(driver.PREFIX + column) for column in columns})
    )


_TABLES = {"requests": table_of(Request), "deliveries": table_of(Delivery)}


async def move_deliveries(
    session: AsyncSession, where: Sequence[Any], from_statuses: Sequence[str], to_status: str, **values: Any
) -> int:
    """Move every delivery matching `where` that is in one of `from_statuses`; returns how many."""
    for from_status in from_statuses:
        check(DELIVERY_TRANSITIONS, from_status, to_status)
    return await rows_changed(
        session,
        update(Delivery)
        .where(Delivery.status.in_(from_statuses), *where)
        .values(status=to_status, **values)
        .execution_options(synchronize_session=False),
    )


def move_delivery(delivery: Delivery, to_status: str) -> None:
    """Move a loaded delivery to `to_status`."""
    check(DELIVERY_TRANSITIONS, delivery.status, to_status)
    delivery.status = to_status


def move_breaker(
    session: AsyncSession, destination: Destination, to_state: str, reason: str
) -> DestinationEvent:
    """Move a loaded, locked destination's breaker to `to_state` and write its event row."""
    check(BREAKER_TRANSITIONS, destination.breaker, to_state)
    event = note_destination(session, destination, reason, to_state)
    destination.breaker = to_state
    destination.updated_at = event.at
    return event


def note_destination(
    session: AsyncSession, destination: Destination, reason: str, to_state: str = ""
) -> DestinationEvent:
    """Write a destination's event row: a breaker move (through move_breaker), or an operator's
    change that moves none (its signing secret: from its state to the same)."""
    event = DestinationEvent(
        destination_id=destination.id,
        from_state=destination.breaker,
        to_state=to_state or destination.breaker,
        reason=reason,
        at=utcnow(),
        worker=process_name(),
    )
    session.add(event)
    return event


def begin_recovery(session: AsyncSession, recovery: Recovery) -> None:
    """Record the creation of a flushed recovery: its first event, from nothing to queued."""
    reason = f"{recovery.kind} asked for (via {recovery.via})"
    _recovery_event(session, recovery, None, reason, recovery.created_at)


def move_recovery(
    session: AsyncSession, recovery: Recovery, to_status: str, reason: str | None = None
) -> None:
    """Move a loaded, locked recovery to `to_status`, stamp its phase and write its event row.
    Once it ends it no longer holds its active_key, so the same recovery may be asked for again."""
    check(RECOVERY_TRANSITIONS, recovery.status, to_status)
    now = utcnow()
    from_status, recovery.status = recovery.status, to_status
    _recovery_event(session, recovery, from_status, reason, now)
    if to_status == RecoveryStatus.RUNNING:
        recovery.started_at = now
    if to_status not in RECOVERY_ACTIVE:
        recovery.finished_at = now
        recovery.active_key = None
        recovery.leased_by = recovery.leased_until = None


def _recovery_event(
    session: AsyncSession, recovery: Recovery, from_status: str | None, reason: str | None, at: Any
) -> None:
    """A row of the recovery's timeline: how it came to be in its (new) status."""
    event = RecoveryEvent(recovery_id=recovery.id, from_status=from_status, to_status=recovery.status)
    event.reason, event.at, event.worker = reason, at, process_name()
    session.add(event)


def _chunks(items: Sequence[int] | Iterable[int], size: int) -> Iterable[list[int]]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]
