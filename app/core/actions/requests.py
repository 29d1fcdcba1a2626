"""The operator's actions on one request: cancel it, redeliver its result, re-point its delivery.

Each checks the request's state under a row lock and audits what it did in request_events.
An action on a finished request also holds its batch (or the request, without one) for the
rest of its transaction, so a purge (app.core.retention) cannot delete what it is changing.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import results
from app.core.actions.batches import CANCELLED_ERROR
from app.core.intake import accept as intake
from app.core.intake import edit
from app.core.intake.schema import StoredConfig
from app.core.read import queries
from app.core.rules import audit, fanout, leases, states
from app.core.rules.errors import Conflict, NotFound, Problem, TooMany, found
from app.core.rules.owners import Caller
from app.db.models import Batch, Delivery, Request, RequestEvent, delivery_public_id
from app.db.session import Database
from app.ground import sealing
from app.ground.clock import utcnow
from app.ground.config import Settings
from app.ground.statuses import DeliveryStatus, RequestStatus
from app.ground.webhook_headers import redact

REDELIVER = "redeliver"  # the audit trail's action, counted by `bounded`
MINUTE = timedelta(minutes=1)


async def cancel_request(db: Database, custom_id: str | int, caller: Caller, via: str = "api") -> Request:
    """Cancel one request that has no result yet; the cancellation is delivered as its outcome."""
    async with db.transaction() as session:
        request, _ = await queries.request_and_delivery(session, custom_id, caller)
        if request.status in states.REQUEST_FINISHED:
            raise Conflict(
                Problem(
                    "request_finished",
                    "Request already finished",
                    f"Request {custom_id!r} is {request.status}; there is nothing left to cancel.",
                )
            )
        done = await results.close_without_result(
            session, [request.id], request.status, RequestStatus.CANCELLED, CANCELLED_ERROR
        )
        if not done:
            raise Conflict(
                Problem("request_moved", "Request changed meanwhile", "It moved on; reload and try again.")
            )
        await audit.note_requests(session, done, "cancel", {"via": via, "from": request.status})
        await session.refresh(request)
    return request


async def change_delivery(
    db: Database, settings: Settings, custom_id: str | int, caller: Caller, config: Any, via: str = "api"
) -> StoredConfig:
    """Change where a request's result goes (validated like intake) and audit the change.

    Webhook headers left out, or given as REDACTED, keep their stored values (see
    app.core.intake.edit); it returns the new config with its values, for the caller to redact.

    It applies to every delivery from now on: a queued delivery is re-pointed at once (with one
    destination, its one delivery; with several, each queued delivery to a destination the new
    list names again, with that entry's headers), a finished one goes to the new destinations
    on redeliver. (A queued one keeps its target if the new config drops it: there is no state
    for a delivery called off.)
    """
    async with db.transaction() as session:
        request, delivery = await queries.request_and_delivery(session, custom_id, caller)
        await hold(session, request, custom_id)
        # Compared and edited in plain text; stored with header values sealed (SECRETS_KEY).
        sealer = sealing.sealer(settings.secrets_key)
        old = sealer.open_headers(request.delivery)
        # Header values are never shown, so an edit keeps the stored ones (app.core.intake.edit).
        new = intake.validate_delivery_config(edit.keep_headers(config, old), settings)
        if old == new:
            return new
        request.delivery = stored = sealer.seal_headers(new)
        if isinstance(stored, dict):
            due = delivery is not None and delivery.status in states.DELIVERY_DUE
            if delivery is not None and due and stored["type"] in results.DELIVERING_CHANNELS:
                delivery.channel, delivery.target = stored["type"], stored
        else:
            entries = {fanout.destination_identity(entry): entry for entry in stored}
            for queued in await _deliveries(session, request.id, due=True):
                if (entry := entries.get(fanout.destination_identity(queued.target))) is not None:
                    queued.target = entry
        # The audit trail is shown on the request page: header values stay out of it.
        change = {"via": via, "from": redact(old), "to": redact(new)}
        await audit.note_requests(session, [request.id], "delivery_changed", change)
    return new


async def redeliver(
    db: Database,
    settings: Settings,
    custom_id: str | int,
    caller: Caller,
    via: str = "api",
    delivery_id: int | None = None,
) -> list[Delivery]:
    """Queue a request's delivery again, to its current delivery config, with a fresh attempt
    budget: to every destination it names, or only the delivery `delivery_id` (a row id). At
    most REDELIVER_MAX times in all and REDELIVER_PER_MINUTE a minute (see `bounded`)."""
    async with db.transaction() as session:
        request, latest = await queries.request_and_delivery(session, custom_id, caller)
        await hold(session, request, custom_id)
        if request.status not in states.REQUEST_FINISHED:
            detail = f"Request {custom_id!r} is {request.status}; it is delivered once it has a result."
            raise Conflict(Problem("not_finished", "Request has no result yet", detail))
        targets = fanout.destinations_of(request.delivery)
        if not targets:  # its config sends nowhere
            raise Conflict(
                Problem(
                    "no_delivery", "Nothing to deliver", f"Request {custom_id!r} has no delivery destination."
                )
            )
        await bounded(session, settings, request.id, custom_id)
        if isinstance(request.delivery, dict):
            # One destination: its latest delivery, re-pointed at the config as it is now.
            pairs = [(targets[0], latest)]
        else:
            rows = {fanout.destination_identity(d.target): d for d in await _deliveries(session, request.id)}
            pairs = [(entry, rows.get(fanout.destination_identity(entry))) for entry in targets]
        if delivery_id is not None:
            pairs = [(entry, d) for entry, d in pairs if d is not None and d.id == delivery_id]
            if not pairs:
                raise NotFound(
                    Problem(
                        "not_found",
                        "No such delivery",
                        f"Request {custom_id!r} has no delivery {delivery_public_id(delivery_id)} "
                        "to a destination its delivery config names.",
                    )
                )
        queued = [_queue_again(session, request.id, entry, d) for entry, d in pairs]
        targets_shown = redact([entry for entry, _ in pairs])
        detail_note = {"via": via, "target": targets_shown[0] if len(pairs) == 1 else targets_shown}
        await audit.note_requests(session, [request.id], REDELIVER, detail_note)
    return queued


async def bounded(session: AsyncSession, settings: Settings, request_id: int, custom_id: str | int) -> None:
    """Refuse one more redelivery of a request past REDELIVER_MAX in all (Conflict) or
    REDELIVER_PER_MINUTE in the last minute (TooMany). A webhook may itself call redeliver: two
    requests whose webhooks redelivered each other looped for ever (issue 29); bounded, the
    refused call fails the delivery that made it, and the loop ends in delivery_failed."""
    # Counted under the request's row lock, so two redeliveries at once cannot both pass.
    await session.execute(select(Request.id).where(Request.id == request_id).with_for_update())
    mine = (RequestEvent.request_id == request_id, RequestEvent.action == REDELIVER)
    count = await session.scalar(select(func.count()).select_from(RequestEvent).where(*mine)) or 0
    if count >= settings.redeliver_max:
        raise Conflict(
            Problem(
                "redeliver_limit",
                "Redelivered too often",
                f"Request {custom_id!r} was redelivered {count} times, as many as REDELIVER_MAX "
                "allows; its delivery stays as it is.",
            )
        )
    now = utcnow()
    recent = (
        await session.scalars(
            select(RequestEvent.at).where(*mine, RequestEvent.at > now - MINUTE).order_by(RequestEvent.at)
        )
    ).all()
    if len(recent) >= settings.redeliver_per_minute:
        # Free again when enough of the last minute's redeliveries have left it.
        frees_at = recent[len(recent) - settings.redeliver_per_minute] + MINUTE
        wait = max(1, math.ceil((frees_at - now).total_seconds()))
        raise TooMany(
            wait,
            Problem(
                "redeliver_rate",
                "Redelivered too often just now",
                f"Request {custom_id!r} was redelivered {len(recent)} times in the last minute, as "
                f"many as REDELIVER_PER_MINUTE allows; try again in {wait} s.",
            ),
        )


def _queue_again(
    session: AsyncSession, request_id: int, target: dict[str, Any], delivery: Delivery | None
) -> Delivery:
    """The delivery of one destination, due again with a fresh attempt budget (left as it is
    when it is queued already: redelivering again is a no-op, not an error)."""
    new_row = results.delivery_row(request_id, target, utcnow())
    assert new_row is not None, "fanout.destinations_of names only destinations that deliver"
    if delivery is None:
        # Its destination had no delivery yet (its config was 'none' or named it since).
        delivery = Delivery(**new_row)
        session.add(delivery)
    elif delivery.status not in states.DELIVERY_DUE:
        states.move_delivery(delivery, DeliveryStatus.PENDING)
        delivery.channel, delivery.target = target["type"], target
        delivery.destination = new_row["destination"]
        delivery.attempts = 0
        delivery.next_attempt_at = utcnow()
        delivery.last_error = None
        delivery.delivered_at = None
        leases.release(delivery)
    return delivery


async def _deliveries(session: AsyncSession, request_id: int, due: bool = False) -> list[Delivery]:
    """A request's deliveries oldest first (only the queued ones with `due`), locked."""
    where = list(queries.of_result(request_id))
    if due:
        where.append(Delivery.status.in_(states.DELIVERY_DUE))
    rows = await session.scalars(select(Delivery).where(*where).order_by(Delivery.id).with_for_update())
    return list(rows.all())


async def hold(session: AsyncSession, request: Request, custom_id: str | int) -> None:
    """Keep a purge off this request until the transaction ends: a purge skips a batch (or a
    batchless request) someone holds, and one it already took is gone here (NotFound)."""
    if request.batch_id is not None:
        # FOR KEY SHARE: the pipeline's own updates of the batch go on meanwhile.
        shared = {"read": True, "key_share": True}
        held: Any = await session.get(Batch, request.batch_id, with_for_update=shared)
    else:
        held = await session.get(Request, request.id, with_for_update=True)
    found(held, "request", custom_id)
