"""Native batch API: list and inspect batches, and the operator's actions on one."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, delete, get, post
from litestar.datastructures import State
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromQuery, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from app.api.errors import documented_errors
from app.api.schemas import (
    BatchDetailOut,
    BatchListOut,
    BatchOut,
    DeletedOut,
    RedeliveredOut,
    batch_detail_out,
    batch_out,
)
from app.core.read import queries
from app.web.auth import caller_of
from app.web.http import HttpRequest, OwnerFilter, RowCursor, RowId
from app.web.state import app_state

NO_SUCH_BATCH = "No such batch"


def _not_found_or(conflict: str) -> dict[int, ResponseSpec]:
    """The error answers of an action on one batch: it is missing, or its status forbids it."""
    return documented_errors({404: NO_SUCH_BATCH, 409: conflict})


def _batch_action(verb: str, summary: str, conflict: str) -> HTTPRouteHandler:
    """The route of POST /api/batches/{id}/{verb}: 202, or 404 / 409 in the error format."""
    return post(
        f"/{{batch_id:int}}/{verb}",
        status_code=HTTP_202_ACCEPTED,
        summary=summary,
        responses=_not_found_or(conflict),
        operation_id=f"{verb}Batch",
    )


class BatchController(Controller):
    path = "/batches"
    tags = ["batches"]

    @get(
        "/",
        summary="Batches, newest first (keyset pagination)",
        operation_id="listBatches",
        responses=documented_errors(),
    )
    async def list(
        self,
        request: HttpRequest,
        state: State,
        status: FromQuery[str | None] = None,
        owner: OwnerFilter = None,
        before_id: RowCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> BatchListOut:
        app = app_state(state)
        batches = await queries.list_batches(
            app.db, caller_of(request), status=status, before_id=before_id, limit=limit, owner=owner
        )
        next_before = batches[-1].id if len(batches) == limit else None
        settings = await app.effective.fresh()
        return BatchListOut([batch_out(b, settings) for b in batches], next_before)

    @get(
        "/{batch_id:int}",
        summary="A batch with its timeline",
        responses=documented_errors({404: NO_SUCH_BATCH}),
        operation_id="getBatch",
    )
    async def read(self, batch_id: RowId, request: HttpRequest, state: State) -> BatchDetailOut:
        app = app_state(state)
        detail = await queries.batch_detail(app.db, batch_id, caller_of(request))
        return batch_detail_out(detail, await app.effective.fresh())

    @_batch_action(
        "close",
        "Close a building batch now instead of waiting for size or age",
        conflict="Batch is not building",
    )
    async def close(self, batch_id: RowId, request: HttpRequest, state: State) -> BatchOut:
        app = app_state(state)
        batch = await app.actions.close_batch(batch_id, caller_of(request))
        return batch_out(batch, await app.effective.fresh())

    @_batch_action(
        "cancel",
        "Cancel a building, ready or processing batch; its unfinished requests end cancelled",
        conflict="Batch cannot be cancelled in its status",
    )
    async def cancel(self, batch_id: RowId, request: HttpRequest, state: State) -> BatchOut:
        app = app_state(state)
        batch = await app.actions.cancel_batch(batch_id, caller_of(request))
        return batch_out(batch, await app.effective.fresh())

    @_batch_action(
        "retry",
        "Run a failed batch again (its failed requests)",
        conflict="Batch is not failed",
    )
    async def retry(self, batch_id: RowId, request: HttpRequest, state: State) -> BatchOut:
        app = app_state(state)
        batch = await app.actions.retry_batch(batch_id, caller_of(request))
        return batch_out(batch, await app.effective.fresh())

    @_batch_action(
        "redeliver",
        "Queue again the failed (only=failed, default) or all ended deliveries of a batch",
        conflict="Nothing to redeliver",
    )
    async def redeliver(
        self,
        batch_id: RowId,
        request: HttpRequest,
        state: State,
        only: FromQuery[Literal["failed", "all"]] = "failed",
    ) -> RedeliveredOut:
        actions = app_state(state).actions
        moved = await actions.redeliver_batch(batch_id, caller_of(request), only_failed=only == "failed")
        return RedeliveredOut(batch_id, moved)

    @delete(
        "/{batch_id:int}",
        status_code=HTTP_200_OK,
        summary="Delete a finished batch with its requests, once nothing of it waits for delivery",
        responses=_not_found_or(conflict="Batch not finished, or results still being delivered"),
        operation_id="deleteBatch",
    )
    async def remove(self, batch_id: RowId, request: HttpRequest, state: State) -> DeletedOut:
        return DeletedOut(batch_id, await app_state(state).actions.delete_batch(batch_id, caller_of(request)))
