"""/v1/batches: create a drop-in batch from an uploaded file, read, list and cancel it."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from app.api.openai.errors import documented_errors, invalid
from app.api.openai.schemas import BATCH_ID, BatchListOut, BatchOut, batch_number, batch_out
from app.core.dropin import create, file_store
from app.core.intake import accept as intake
from app.core.read import dropin
from app.core.rules.errors import NotFound, not_found
from app.web.auth import caller_of
from app.web.http import HttpRequest, require_json
from app.web.state import app_state

NO_SUCH_BATCH = {404: "No such batch"}
METADATA_MAX_PAIRS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 16, 64, 512


def _number(batch_id: str) -> int:
    """The batch behind a public id; anything not shaped "batch_<n>" is no batch of ours."""
    number = batch_number(batch_id)
    if number is None:
        raise not_found("batch", batch_id)
    return number


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or len(value) > METADATA_MAX_PAIRS
        or not all(isinstance(k, str) and len(k) <= METADATA_KEY_MAX for k in value)
        or not all(isinstance(v, str) and len(v) <= METADATA_VALUE_MAX for v in value.values())
    ):
        raise invalid(
            "invalid_value",
            f"metadata holds at most {METADATA_MAX_PAIRS} string pairs, keys up to {METADATA_KEY_MAX} "
            f"and values up to {METADATA_VALUE_MAX} characters.",
            "metadata",
        )
    return value


def _required_text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise invalid("missing_required_parameter", f"{name} is required.", name)
    return value


class BatchController(Controller):
    path = "/batches"
    tags = ["openai"]

    @post(
        "/",
        status_code=200,
        summary="Create a batch from an uploaded input file",
        responses=documented_errors(
            {
                400: "Body not JSON, a parameter missing or not valid, or no such input file",
                413: "Body larger than API_MAX_BODY_BYTES",
                415: "Body not sent as application/json",
            }
        ),
    )
    async def create(self, request: HttpRequest, state: State) -> BatchOut:
        # Read raw, as the native intake is: the same refusals of JSON that is malformed, nested
        # too deeply or holds text no database stores (a NUL id would fail the lookup as a 500).
        require_json(request.headers.get("content-type"))
        data = intake.parse(await request.body())
        if not isinstance(data, dict):
            raise invalid("invalid_value", "The body must be a JSON object.")
        file_id = _required_text(data, "input_file_id")
        endpoint = _required_text(data, "endpoint")
        if data.get("completion_window") != "24h":
            raise invalid("invalid_value", "completion_window must be '24h'.", "completion_window")
        metadata = _metadata(data.get("metadata"))
        output_expires_after = file_store.output_expires_after(data.get("output_expires_after"))
        app = app_state(state)
        caller = caller_of(request)
        try:
            file = await file_store.get(app.db, file_id, caller)
        except NotFound:
            # OpenAI answers an unknown input file as a bad parameter, not a missing resource.
            raise invalid("invalid_value", f"No file with id {file_id!r}.", "input_file_id") from None
        batch = await app.actions.create_batch_from_file(
            caller, file, endpoint, metadata, output_expires_after
        )
        return batch_out(await dropin.batch(app.db, create.OPENAI_ORIGIN, batch.id, caller))

    @get("/", summary="Batches, newest first", responses=documented_errors())
    async def list(
        self,
        request: HttpRequest,
        state: State,
        after: Annotated[str | None, QueryParameter(pattern=f"^{BATCH_ID.pattern}$")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    ) -> BatchListOut:
        older_than = None
        if after is not None:
            older_than = batch_number(after)
            if older_than is None:
                raise invalid("invalid_value", "after must be a batch id (batch_<n>).", "after")
        # OpenAI's `after` is the last id seen: the next page holds older batches.
        page, has_more = await dropin.page(
            app_state(state).db, create.OPENAI_ORIGIN, caller_of(request), limit, after_id=older_than
        )
        data = [batch_out(t) for t in page]
        return BatchListOut(data, data[0].id if data else None, data[-1].id if data else None, has_more)

    @get("/{batch_id:str}", summary="A batch", responses=documented_errors(NO_SUCH_BATCH))
    async def read(self, batch_id: FromPath[str], request: HttpRequest, state: State) -> BatchOut:
        view = await dropin.batch(
            app_state(state).db, create.OPENAI_ORIGIN, _number(batch_id), caller_of(request)
        )
        return batch_out(view)

    @post(
        "/{batch_id:str}/cancel",
        status_code=200,
        summary="Cancel a batch that has not ended",
        responses=documented_errors({**NO_SUCH_BATCH, 409: "The batch has ended"}),
    )
    async def cancel(self, batch_id: FromPath[str], request: HttpRequest, state: State) -> BatchOut:
        app = app_state(state)
        caller = caller_of(request)
        number = _number(batch_id)
        # Checked first so that a native batch's id cannot be cancelled through this face.
        await dropin.batch(app.db, create.OPENAI_ORIGIN, number, caller)
        await app.actions.cancel_batch(number, caller, via="openai")
        return batch_out(await dropin.batch(app.db, create.OPENAI_ORIGIN, number, caller))
