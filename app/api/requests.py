"""Native intake API: POST a request, list requests, read one back with its result and delivery
trail, redeliver or cancel it."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from app.api.errors import documented_errors
from app.api.schemas import (
    AcceptedOut,
    BulkOut,
    DeliveryOut,
    RequestListOut,
    RequestOut,
    bulk_out,
    delivery_out,
    request_out,
    request_summary_out,
)
from app.core.intake import accept as intake
from app.core.intake import bulk
from app.core.read import queries
from app.core.rules.errors import NotFound, Problem
from app.ground.statuses import DeliveryStatus, RequestStatus
from app.web.answers import JsonAnswer
from app.web.auth import caller_of
from app.web.http import (
    HttpRequest,
    OwnerFilter,
    RowCursor,
    header,
    json_or_jsonl,
    read_body,
    require_json,
    small_body,
)
from app.web.state import app_state

NO_SUCH_REQUEST = {404: "No such request"}
# A delivery's public id (dlv_N) or its row id: one of a request's deliveries to redeliver.
DELIVERY_ID_PATTERN = r"^(dlv_)?[0-9]{1,18}$"


class RequestController(Controller):
    path = "/requests"
    tags = ["requests"]

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        summary="Submit one request",
        description="Accepts an OpenAI batch line plus `delivery_config`; the result is delivered later.",
        responses=documented_errors(
            {
                400: "Body is not JSON (malformed, not UTF-8, nested too deeply)",
                409: "Duplicate custom_id",
                413: "Body larger than API_MAX_BODY_BYTES",
                415: "Body not sent as application/json",
                422: "One entry per schema or rule failure",
            }
        ),
        operation_id="createRequest",
        # Encoded once and sent as is: the route answered most often (app.web.answers).
        response_class=JsonAnswer,
    )
    async def create(self, request: HttpRequest) -> AcceptedOut:
        # The app's state is read off the request rather than injected: Litestar builds a State
        # for an injected one on every request, a few percent of intake's CPU time.
        app = app_state(request.app.state)
        # From the scope: request.headers builds a Headers object (2% of intake's CPU time).
        require_json(header(request.scope, b"content-type"))
        data = intake.parse(await small_body(request))
        accepted = await intake.accept(app.db, await app.effective.fresh(), data, caller=caller_of(request))
        return AcceptedOut(accepted.id, accepted.custom_id, accepted.status)

    @get(
        "/",
        summary="Requests, newest first (keyset pagination), filtered as the UI's list",
        description="Filters combine: `status`, `delivery_status` (of the latest delivery), "
        "`batch_id`, `model` (exact), and `custom_id` (text the custom_id starts with, or contains "
        "with `match=contains`). Answers `{data, next_before_id}`; pass `next_before_id` as "
        "`before_id` for the next page.",
        operation_id="listRequests",
        responses=documented_errors(),
    )
    async def list(
        self,
        request: HttpRequest,
        state: State,
        status: FromQuery[RequestStatus | None] = None,
        owner: OwnerFilter = None,
        delivery_status: FromQuery[DeliveryStatus | None] = None,
        batch_id: RowCursor = None,
        model: Annotated[str | None, QueryParameter(min_length=1, max_length=255)] = None,
        custom_id: Annotated[str | None, QueryParameter(min_length=1, max_length=512)] = None,
        match: FromQuery[Literal["prefix", "contains"]] = "prefix",
        before_id: RowCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> RequestListOut:
        # The UI list's own query, so both faces filter alike (search and match are its names).
        query = queries.RequestQuery(
            status=status or "",
            delivery_status=delivery_status or "",
            batch_id=batch_id,
            model=model or "",
            search=custom_id or "",
            match=match,
            owner=owner,
        )
        rows = await queries.list_requests(
            app_state(state).db, query, caller_of(request), before_id=before_id, limit=limit
        )
        next_before = rows[-1].request.id if len(rows) == limit else None
        return RequestListOut([request_summary_out(r) for r in rows], next_before)

    @post(
        "/bulk",
        status_code=HTTP_200_OK,
        # Its own limit (API_BULK_MAX_BODY_BYTES), checked as the body is read.
        request_max_body_size=None,
        summary="Submit many requests in one body",
        description="A JSON array of requests (`application/json`) or one request a line "
        "(`application/x-ndjson` or `application/jsonl`), each what `POST /api/requests` accepts, "
        "at most API_BULK_MAX_ITEMS. Partial success: every valid item is stored (committed "
        "before the answer) even when others are rejected; `results` answers each item in input "
        "order, and an error's pointer starts with the item's index.",
        responses=documented_errors(
            {
                400: "Body (or a JSONL line, named in the detail) is not JSON; nothing stored",
                413: "Body larger than API_BULK_MAX_BODY_BYTES, or more items than API_BULK_MAX_ITEMS",
                415: "Body sent as neither application/json nor application/x-ndjson",
                422: "A JSON body that is not an array",
            }
        ),
        operation_id="createRequestsBulk",
    )
    async def create_many(self, request: HttpRequest, state: State) -> BulkOut:
        app = app_state(state)
        jsonl = json_or_jsonl(request.headers.get("content-type"))
        settings = await app.effective.fresh()
        raw = await read_body(request, settings.api_bulk_max_body_bytes, "API_BULK_MAX_BODY_BYTES")
        outcome = await bulk.accept_body(
            app.db, settings, raw, jsonl, settings.api_bulk_max_items, caller_of(request)
        )
        return bulk_out(outcome)

    # The bulk route's path is also where a request with custom_id "bulk" is read: Litestar
    # would answer GET there 405 instead of trying the path route below.
    @get(
        "/bulk",
        summary="The request whose custom_id is `bulk` (GET /api/requests/{custom_id} for that id)",
        responses=documented_errors(NO_SUCH_REQUEST),
        operation_id="getRequestNamedBulk",
    )
    async def read_bulk(self, request: HttpRequest, state: State, owner: OwnerFilter = None) -> RequestOut:
        caller = caller_of(request).acting_for(owner)
        return request_out(await queries.request_detail(app_state(state).db, "bulk", caller))

    @get(
        "/{custom_id:path}",
        summary="A request with its result, delivery status and attempts",
        responses=documented_errors(NO_SUCH_REQUEST),
        operation_id="getRequest",
    )
    async def read(
        self, custom_id: FromPath[str], request: HttpRequest, state: State, owner: OwnerFilter = None
    ) -> RequestOut:
        custom_id, caller = custom_id.removeprefix("/"), caller_of(request).acting_for(owner)
        return request_out(await queries.request_detail(app_state(state).db, custom_id, caller))

    @post(
        "/{custom_id:path}",
        status_code=HTTP_202_ACCEPTED,
        summary="An action on a request: POST /api/requests/{custom_id}/redeliver or .../cancel",
        description="`redeliver` re-queues the delivery of every destination its delivery config "
        "names (answers the first; `?delivery_id=dlv_N` re-queues only that one); `cancel` ends a "
        "request that has no result yet as `cancelled` and delivers that (answers the request).",
        responses=documented_errors(
            {
                **NO_SUCH_REQUEST,
                409: "Nothing to redeliver, already finished, or redelivered REDELIVER_MAX times",
                429: "Redelivered REDELIVER_PER_MINUTE times in the last minute (Retry-After)",
            }
        ),
        operation_id="requestAction",
    )
    async def act(
        self,
        custom_id: FromPath[str],
        request: HttpRequest,
        state: State,
        delivery_id: Annotated[str | None, QueryParameter(pattern=DELIVERY_ID_PATTERN)] = None,
        owner: OwnerFilter = None,
    ) -> DeliveryOut | RequestOut:
        # One path with GET (so OPTIONS and the document say both): here the path is the id and
        # the verb; custom ids may contain '/', so the id is everything before the last one.
        custom_id, slash, verb = custom_id.removeprefix("/").rpartition("/")
        if not slash or verb not in ("redeliver", "cancel") or not custom_id:
            raise NotFound(
                Problem(
                    "not_found",
                    "Not found",
                    "The actions are POST /api/requests/{custom_id}/redeliver and .../cancel.",
                )
            )
        app = app_state(state)
        caller = caller_of(request).acting_for(owner)
        if verb == "cancel":
            await app.actions.cancel_request(custom_id, caller)
            return request_out(await queries.request_detail(app.db, custom_id, caller))
        row_id = int(delivery_id.removeprefix("dlv_")) if delivery_id is not None else None
        queued = await app.actions.redeliver_request(custom_id, caller, delivery_id=row_id)
        return delivery_out(queued[0], [])
