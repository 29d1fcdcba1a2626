"""Read side: what the API and UI show. Keyset-paginated, bounded, no writes.

Every list is a keyset query (never OFFSET) and every total is counted up to COUNT_CAP rows only,
so the plain lists, status filters and sorts cost the same at a thousand requests as at millions.
Searches and the delivery-status filter read their own indexes (app.core.read.search, and
keyset_page's `scattered` pages); bench.ui in BENCHMARKS.md measures every list at 1M requests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Select, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.read import search
from app.core.read.pages import PAGE_SIZES, Page, cursor_of, keyset_page
from app.core.rules import fanout
from app.core.rules.errors import found
from app.core.rules.owners import Caller, visible
from app.db.models import Batch, BatchEvent, Delivery, DeliveryAttempt, Request, RequestEvent
from app.db.session import Database


@dataclass(slots=True)
class DeliveryTrail:
    """One destination's delivery of a request's result, with its attempts."""

    delivery: Delivery
    attempts: list[DeliveryAttempt] = field(default_factory=list)


@dataclass(slots=True)
class RequestDetail:
    request: Request
    delivery: Delivery | None  # its latest delivery
    attempts: list[DeliveryAttempt] = field(default_factory=list)  # the latest delivery's
    events: list[RequestEvent] = field(default_factory=list)
    # Each destination's current delivery (several when its config fans out), oldest first.
    deliveries: list[DeliveryTrail] = field(default_factory=list)

    @property
    def delivery_status(self) -> str | None:
        """The request's delivery status over all its destinations (app.core.rules.fanout)."""
        return fanout.overall_status(trail.delivery.status for trail in self.deliveries)


@dataclass(slots=True)
class BatchDetail:
    batch: Batch
    events: list[BatchEvent]
    # The delivery that announces an event to BATCH_EVENTS_WEBHOOK_URL, by event id.
    announced: dict[int, Delivery]


@dataclass(frozen=True, slots=True)
class BatchOutcomes:
    """A batch's requests by status, its deliveries by status, and the tokens it used."""

    requests: dict[str, int]
    deliveries: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    body_bytes: int = 0  # the size of its requests' lines, summed


@dataclass(frozen=True, slots=True, kw_only=True)
class ListQuery:
    """What every list page asks: a search, a status, a sort, and where its page starts."""

    search: str = ""
    status: str = ""
    sort: str = "newest"
    size: int = 25
    after: str = ""
    before: str = ""
    owner: str | None = None  # only this team's ('' for work no team owns); None: every team's


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchQuery(ListQuery):
    backend: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestQuery(ListQuery):
    match: str = "prefix"
    delivery_status: str = ""
    batch_id: int | None = None
    model: str = ""


@dataclass(frozen=True, slots=True)
class RequestRow:
    request: Request
    delivery_status: str | None  # over all its destinations (app.core.rules.fanout)
    delivery_attempts: int


# Sort name → the columns it orders by, each (column, descending); the id always breaks ties.
BATCH_SORTS: dict[str, list[tuple[Any, bool]]] = {
    "newest": [(Batch.id, True)],
    "oldest": [(Batch.id, False)],
    "status": [(Batch.status, False), (Batch.id, True)],
}
REQUEST_SORTS: dict[str, list[tuple[Any, bool]]] = {
    "newest": [(Request.id, True)],
    "oldest": [(Request.id, False)],
    "status": [(Request.status, False), (Request.id, True)],
    "custom_id": [(Request.custom_id, False), (Request.id, False)],
}


def of_result(request_id: int) -> tuple[ColumnElement[bool], ...]:
    """The deliveries of a request's result (not its events' to subscriptions, nor a replay's
    extra copies to another target: app.core.recoveries)."""
    return (
        Delivery.request_id == request_id,
        Delivery.subscription_id.is_(None),
        Delivery.replay_id.is_(None),
    )


async def request_and_delivery(
    session: AsyncSession, ident: str | int, caller: Caller
) -> tuple[Request, Delivery | None]:
    """A request by row id (int) or by its custom_id (str) in the caller's native scope, and its
    latest delivery; NotFound if absent or not the caller's to see."""
    if isinstance(ident, int):
        match = and_(Request.id == ident, visible(Request.owner, caller))
    else:
        match = and_(Request.custom_id == ident, Request.scope == caller.scope)
    request = found(await session.scalar(select(Request).where(match)), "request", ident)
    delivery = await session.scalar(
        select(Delivery).where(*of_result(request.id)).order_by(Delivery.id.desc()).limit(1)
    )
    return request, delivery


async def request_detail(db: Database, custom_id: str | int, caller: Caller) -> RequestDetail:
    """A request with each destination's current delivery and its attempts, and the operator's
    actions."""
    async with db.transaction() as session:
        request, _ = await request_and_delivery(session, custom_id, caller)
        rows = (
            await session.scalars(select(Delivery).where(*of_result(request.id)).order_by(Delivery.id))
        ).all()
        current = fanout.current(rows)
        attempts = (
            await session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id.in_([d.id for d in current]))
                .order_by(DeliveryAttempt.delivery_id, DeliveryAttempt.number)
            )
        ).all()
        events = (
            await session.scalars(
                select(RequestEvent).where(RequestEvent.request_id == request.id).order_by(RequestEvent.id)
            )
        ).all()
    trails = [DeliveryTrail(d, [a for a in attempts if a.delivery_id == d.id]) for d in current]
    latest = max(trails, key=lambda t: t.delivery.id, default=None)
    return RequestDetail(
        request,
        latest.delivery if latest else None,
        latest.attempts if latest else [],
        list(events),
        trails,
    )


async def batch_detail(db: Database, batch_id: int, caller: Caller) -> BatchDetail:
    """A batch with its timeline; NotFound if absent or not the caller's to see."""
    async with db.transaction() as session:
        batch = seen_batch(await session.get(Batch, batch_id), batch_id, caller)
        events = (
            await session.scalars(
                select(BatchEvent).where(BatchEvent.batch_id == batch_id).order_by(BatchEvent.id)
            )
        ).all()
        # An event may also go to the batch's own webhook and to subscriptions: the one shown is
        # BATCH_EVENTS_WEBHOOK_URL's, queued first (so iterated last, newest first).
        announced = (
            await session.scalars(
                select(Delivery)
                .where(
                    Delivery.batch_event_id.in_([e.id for e in events]), Delivery.subscription_id.is_(None)
                )
                .order_by(Delivery.id.desc())
            )
        ).all()
    return BatchDetail(batch, list(events), {d.batch_event_id: d for d in announced if d.batch_event_id})


async def batch_outcomes(db: Database, batch_id: int) -> BatchOutcomes:
    """Counts for a batch's progress bars and its token usage (bounded by the batch size)."""
    async with db.transaction() as session:
        by_status = (
            await session.execute(
                select(
                    Request.status,
                    func.count(),
                    func.coalesce(func.sum(Request.prompt_tokens), 0),
                    func.coalesce(func.sum(Request.completion_tokens), 0),
                    func.coalesce(func.sum(Request.total_tokens), 0),
                    func.coalesce(func.sum(Request.body_bytes), 0),
                )
                .where(Request.batch_id == batch_id)
                .group_by(Request.status)
            )
        ).all()
        deliveries = (
            await session.execute(
                select(Delivery.status, func.count())
                .join(Request, Request.id == Delivery.request_id)
                .where(Request.batch_id == batch_id, Delivery.subscription_id.is_(None))
                .group_by(Delivery.status)
            )
        ).all()
    return BatchOutcomes(
        requests={status: int(n) for status, n, *_ in by_status},
        deliveries={status: int(n) for status, n in deliveries},
        prompt_tokens=sum(int(row[2]) for row in by_status),
        completion_tokens=sum(int(row[3]) for row in by_status),
        total_tokens=sum(int(row[4]) for row in by_status),
        body_bytes=sum(int(row[5]) for row in by_status),
    )


def seen_batch(batch: Batch | None, batch_id: int, caller: Caller) -> Batch:
    """`batch`, or NotFound when there is none or it is another team's."""
    return found(batch if batch is not None and caller.sees(batch.owner) else None, "batch", batch_id)


def _owned(column: Any, caller: Caller, owner: str | None) -> list[ColumnElement[bool]]:
    """The conditions of a list's rows: the caller's team's (a team's key), the `owner` asked
    for (an admin's filter), or none."""
    if not caller.admin:
        return [column == caller.owner]
    return [] if owner is None else [column == owner]


async def list_batches(
    db: Database,
    caller: Caller,
    *,
    status: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
    owner: str | None = None,
) -> list[Batch]:
    """Batches newest first; pass the last id seen as `before_id` for the next page (the API's
    spelling of the keyset cursor the UI pages with)."""
    where = [Batch.status == status] if status else []
    where += _owned(Batch.owner, caller, owner)
    after = cursor_of([before_id]) if before_id is not None else ""
    async with db.transaction() as session:
        page = await keyset_page(session, select(Batch), where, BATCH_SORTS["newest"], limit, after)
    return page.rows


async def batch_page(db: Database, query: BatchQuery, caller: Caller) -> Page[Batch]:
    """A page of batches, searched (model or endpoint contains), filtered and sorted."""
    where = _owned(Batch.owner, caller, query.owner)
    if query.search:
        pattern = f"%{search.escape_like(query.search)}%"
        where.append(or_(Batch.model.like(pattern, escape="\\"), Batch.endpoint.like(pattern, escape="\\")))
    if query.status:
        where.append(Batch.status == query.status)
    if query.backend:
        where.append(Batch.backend == query.backend)
    async with db.transaction() as session:
        return await keyset_page(
            session,
            select(Batch),
            where,
            BATCH_SORTS[query.sort],
            _size(query.size),
            query.after,
            query.before,
        )


def _request_filters(
    query: RequestQuery, postgres: bool, caller: Caller
) -> tuple[list[ColumnElement[bool]], Select[Any] | None]:
    """The conditions of a requests list (the UI's page and the API's list alike), and the
    cheaper statement to count its matches with, when there is one."""
    where = _owned(Request.owner, caller, query.owner)
    if query.search:
        if query.match == "prefix":
            where.append(search.starts_with(Request.custom_id, query.search, postgres=postgres))
        else:
            where.append(search.contains(Request.custom_id, query.search, postgres=postgres))
    if query.status:
        where.append(Request.status == query.status)
    if query.batch_id is not None:
        where.append(Request.batch_id == query.batch_id)
    if query.model:
        where.append(Request.model == query.model)
    counted = None
    if query.delivery_status:
        # The status is written into the SQL, not bound: with a bound one, PostgreSQL's generic
        # plan (asyncpg prepares, and after five runs the plan stops looking at the value) read
        # every delivery by request_id to keep a rare status's few (210 ms at 1M requests).
        status: BindParameter[str] = bindparam("delivery_status", query.delivery_status, literal_execute=True)
        with_status = select(Delivery.request_id).where(
            Delivery.status == status,
            Delivery.request_id.is_not(None),
            Delivery.subscription_id.is_(None),
            Delivery.replay_id.is_(None),
        )
        if where:  # another condition narrows the rows first: look up each one's deliveries
            where.append(with_status.where(Delivery.request_id == Request.id).exists())
        else:
            # Alone: IN reads the ids from one range of (status, request_id) (SQLite runs EXISTS
            # once per request), and the total needs no requests row at all.
            where.append(Request.id.in_(with_status))
            counted = with_status.distinct()
    return where, counted


async def _request_rows(
    db: Database, query: RequestQuery, caller: Caller, size: int, after: str, before: str = ""
) -> Page[RequestRow]:
    """A page of the requests `query` selects of those `caller` sees, after (or before) a
    cursor, with each one's latest delivery status and its attempts."""
    where, counted = _request_filters(query, db.is_postgres, caller)
    async with db.transaction() as session:
        page = await keyset_page(
            session,
            select(Request),
            where,
            REQUEST_SORTS[query.sort],
            size,
            after,
            before,
            scattered=bool(query.search),
            counted=counted,
        )
        by_request: dict[int, list[Any]] = {}
        if page.rows:
            for row in await session.execute(
                select(Delivery.request_id, Delivery.target, Delivery.status, Delivery.total_attempts)
                .where(
                    Delivery.request_id.in_([r.id for r in page.rows]),
                    Delivery.subscription_id.is_(None),
                    Delivery.replay_id.is_(None),
                )
                .order_by(Delivery.id)
            ):
                by_request.setdefault(row.request_id, []).append(row)
    return Page(
        [RequestRow(r, *_overall(by_request.get(r.id, []))) for r in page.rows],
        page.total,
        page.total_capped,
        page.next_cursor,
        page.prev_cursor,
    )


def _overall(rows: list[Any]) -> tuple[str | None, int]:
    """A request's delivery status over its destinations' current deliveries, and their attempts."""
    current = fanout.current(rows)
    return fanout.overall_status(row.status for row in current), sum(row.total_attempts for row in current)


async def request_page(db: Database, query: RequestQuery, caller: Caller) -> Page[RequestRow]:
    """A page of requests with each one's latest delivery status."""
    return await _request_rows(db, query, caller, _size(query.size), query.after, query.before)


async def list_requests(
    db: Database, query: RequestQuery, caller: Caller, *, before_id: int | None = None, limit: int = 50
) -> list[RequestRow]:
    """Requests newest first, filtered as the UI's list filters them; pass the last id seen as
    `before_id` for the next page (the API's spelling of the UI's keyset cursor)."""
    newest = dataclasses.replace(query, sort="newest")
    after = cursor_of([before_id]) if before_id is not None else ""
    return (await _request_rows(db, newest, caller, limit, after)).rows


async def batch_choices(db: Database, caller: Caller) -> tuple[list[str], list[str], list[str]]:
    """The backends, models and teams that occur among the batches `caller` sees, for the
    filter menus (a team's menus name only what its own batches use)."""
    async with db.transaction() as session:

        async def distinct(column: Any) -> list[str]:
            stmt = select(column).where(visible(Batch.owner, caller)).distinct().order_by(column)
            return list((await session.scalars(stmt)).all())

        return await distinct(Batch.backend), await distinct(Batch.model), await distinct(Batch.owner)


def _size(size: int) -> int:
    return size if size in PAGE_SIZES else PAGE_SIZES[1]
