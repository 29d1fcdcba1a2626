"""Native intake API: POST a request, read it back with its result and delivery trail, redeliver."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED

from app.api.schemas import AcceptedOut, DeliveryOut, ErrorBody, RequestOut, delivery_out, request_out
from app.core.intake import accept as intake
from app.core.read import queries
from app.core.rules.errors import NotFound, Problem

ERRORS = {
    400: ResponseSpec(ErrorBody, description="Body is not JSON"),
    404: ResponseSpec(ErrorBody, description="No such request"),
    409: ResponseSpec(ErrorBody, description="Conflict (duplicate custom_id, nothing to redeliver)"),
    413: ResponseSpec(ErrorBody, description="Body larger than API_MAX_BODY_BYTES"),
    422: ResponseSpec(ErrorBody, description="One entry per schema or rule failure"),
    503: ResponseSpec(ErrorBody, description="Database unavailable: nothing was accepted, try again"),
}


class RequestController(Controller):
    path = "/requests"
    tags = ["requests"]

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        summary="Submit one request",
        description="Accepts an OpenAI batch line plus `delivery_config`; the result is delivered later.",
        responses={k: ERRORS[k] for k in (400, 409, 413, 422, 503)},
        operation_id="createRequest",
    )
    async def create(self, request: Request, state: State) -> AcceptedOut:
        data = intake.parse(await request.body())
        accepted = await intake.accept(state.db, await state.runtime.fresh(), data)
        return AcceptedOut(accepted.id, accepted.custom_id, accepted.status)

    @get(
        "/{custom_id:path}",
        summary="A request with its result, delivery status and attempts",
        responses={404: ERRORS[404]},
        operation_id="getRequest",
    )
    async def read(self, custom_id: FromPath[str], state: State) -> RequestOut:
        return request_out(await queries.request_detail(state.db, custom_id.removeprefix("/")))

    @post(
        "/{custom_id_action:path}",
        status_code=HTTP_202_ACCEPTED,
        summary="An action on a request: POST /api/requests/{custom_id}/redeliver or .../cancel",
        description="`redeliver` re-queues the delivery (answers the delivery); `cancel` ends a request "
        "that has no result yet as `cancelled` and delivers that (answers the request).",
        responses={404: ERRORS[404], 409: ERRORS[409]},
        operation_id="requestAction",
    )
    async def act(self, custom_id_action: FromPath[str], state: State) -> DeliveryOut | RequestOut:
        # custom ids may contain '/', so the id is everything between the prefix and the verb.
        custom_id, slash, verb = custom_id_action.removeprefix("/").rpartition("/")
        if not slash or verb not in ("redeliver", "cancel") or not custom_id:
            raise NotFound(
                Problem(
                    "not_found",
                    "Not found",
                    "The actions are POST /api/requests/{custom_id}/redeliver and .../cancel.",
                )
            )
        if verb == "cancel":
            await state.actions.cancel_request(custom_id)
            return request_out(await queries.request_detail(state.db, custom_id))
        return delivery_out(await state.actions.redeliver_request(custom_id), [])
