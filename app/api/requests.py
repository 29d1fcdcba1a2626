"""Native intake API: POST a request, read it back with its result and delivery trail, redeliver."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED

from app.api.errors import documented_errors
from app.api.schemas import AcceptedOut, DeliveryOut, RequestOut, delivery_out, request_out
from app.core.intake import accept as intake
from app.core.read import queries
from app.core.rules.errors import NotFound, Problem
from app.http import require_json

NO_SUCH_REQUEST = {404: "No such request"}


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
    )
    async def create(self, request: Request) -> AcceptedOut:
        # The app's state is read off the request rather than injected: Litestar builds a State
        # for an injected one on every request, a few percent of intake's CPU time.
        state = request.app.state
        require_json(request.headers.get("content-type"))
        data = intake.parse(await request.body())
        accepted = await intake.accept(state.db, await state.runtime.fresh(), data)
        return AcceptedOut(accepted.id, accepted.custom_id, accepted.status)

    @get(
        "/{custom_id:path}",
        summary="A request with its result, delivery status and attempts",
        responses=documented_errors(NO_SUCH_REQUEST),
        operation_id="getRequest",
    )
    async def read(self, custom_id: FromPath[str], state: State) -> RequestOut:
        return request_out(await queries.request_detail(state.db, custom_id.removeprefix("/")))

    @post(
        "/{custom_id:path}",
        status_code=HTTP_202_ACCEPTED,
        summary="An action on a request: POST /api/requests/{custom_id}/redeliver or .../cancel",
        description="`redeliver` re-queues the delivery (answers the delivery); `cancel` ends a request "
        "that has no result yet as `cancelled` and delivers that (answers the request).",
        responses=documented_errors({**NO_SUCH_REQUEST, 409: "Nothing to redeliver, or already finished"}),
        operation_id="requestAction",
    )
    async def act(self, custom_id: FromPath[str], state: State) -> DeliveryOut | RequestOut:
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
        if verb == "cancel":
            await state.actions.cancel_request(custom_id)
            return request_out(await queries.request_detail(state.db, custom_id))
        return delivery_out(await state.actions.redeliver_request(custom_id), [])
