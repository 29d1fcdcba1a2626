"""Anthropic Message Batches (/v1/messages/batches): create, retrieve, list, cancel, delete and
stream the results of a batch, as the official SDK calls them. Batches run on the local backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK

from app.api.anthropic.errors import documented_errors
from app.api.anthropic.schemas import (
    BATCH_ID,
    DeletedMessageBatchOut,
    MessageBatchListOut,
    MessageBatchOut,
    batch_id_of,
    message_batch,
    processing_status,
    public_id,
    result_line,
)
from app.core.dropin.create import ANTHROPIC_ORIGIN, WEBHOOK_HEADER
from app.core.read import dropin
from app.core.read.dropin import DropinBatch
from app.core.rules.errors import BatchgateError, Conflict, InvalidInput, Problem
from app.core.rules.owners import Caller
from app.web.auth import caller_of
from app.web.forwarded import public_base
from app.web.http import HttpRequest, require_json
from app.web.state import AppState, app_state

MAX_BODY_BYTES = 256 * 1024 * 1024  # Anthropic's own limit for a batch create request
JSONL = "application/x-jsonl"
MISSING = {404: "No such message batch"}


async def _view(app: AppState, batch_id: int, caller: Caller) -> DropinBatch:
    """The Anthropic batch `batch_id`, if the caller's; NotFound for any other."""
    return await dropin.batch(app.db, ANTHROPIC_ORIGIN, batch_id, caller, "message batch")


def base_url(request: HttpRequest) -> str:
    """The face's base URL as the client sees it (public_base: a listed proxy's X-Forwarded-*
    headers count, a client's do not); the mount (/v1 or /api/anthropic/v1) is the one it used."""
    mount: str = request.route_handler.opt["mount"]
    return public_base(request) + mount


def _anchor(name: str, value: str | None) -> int | None:
    """A list cursor's batch id; a malformed one is the caller's mistake (400), not a 404."""
    if value is None:
        return None
    try:
        return batch_id_of(value)
    except BatchgateError as exc:
        raise InvalidInput(
            Problem("invalid_request", "Invalid cursor", f"{value!r} is not a message batch id.", f"/{name}")
        ) from exc


async def _jsonl(app: AppState, batch_id: int) -> AsyncIterator[bytes]:
    async for rows in dropin.result_rows(app.db, batch_id):
        yield b"".join(msgspec.json.encode(result_line(r)) + b"\n" for r in rows)


async def _ended(app: AppState, message_batch_id: str, caller: Caller, then: str) -> int:
    """The id of an ended batch; a batch still processing is refused (Conflict: 400 here)."""
    batch_id = batch_id_of(message_batch_id)
    if processing_status((await _view(app, batch_id, caller)).batch) != "ended":
        raise Conflict(
            Problem(
                "batch_not_ended",
                "Batch still processing",
                f"Message batch {message_batch_id} is still processing; {then}.",
            )
        )
    return batch_id


class MessageBatchController(Controller):
    path = "/messages/batches"
    tags = ["anthropic"]

    @post(
        "/",
        status_code=HTTP_200_OK,
        request_max_body_size=MAX_BODY_BYTES,
        summary="Create a Message Batch",
        responses=documented_errors(
            {
                400: "Body not JSON, a request in it not valid (every problem is listed), or a "
                "batchgate-webhook-url header no delivery could go to",
                413: "Body larger than 256 MB",
                415: "Body not sent as application/json",
            }
        ),
    )
    async def create(self, request: HttpRequest, state: State) -> MessageBatchOut:
        app = app_state(state)
        require_json(request.headers.get("content-type"))
        # The body streams to the core as it arrives; decoded whole, it would cost memory
        # several times its size (up to 256 MB).
        # Batchgate's own header: where the batch's end is announced (docs/api.md).
        webhook_url = request.headers.get(WEBHOOK_HEADER)
        caller = caller_of(request)
        batch = await app.actions.create_batch_from_requests(
            caller, request.stream(), MAX_BODY_BYTES, webhook_url
        )
        return message_batch(await _view(app, batch.id, caller), base_url(request))

    @get("/{message_batch_id:str}", summary="Retrieve a Message Batch", responses=documented_errors(MISSING))
    async def retrieve(
        self, message_batch_id: FromPath[str], request: HttpRequest, state: State
    ) -> MessageBatchOut:
        view = await _view(app_state(state), batch_id_of(message_batch_id), caller_of(request))
        return message_batch(view, base_url(request))

    @get(
        "/",
        summary="List Message Batches, newest first",
        responses=documented_errors({400: "A parameter is not valid, or both before_id and after_id"}),
    )
    async def list_batches(
        self,
        request: HttpRequest,
        state: State,
        before_id: Annotated[str | None, QueryParameter(pattern=f"^{BATCH_ID.pattern}$")] = None,
        after_id: Annotated[str | None, QueryParameter(pattern=f"^{BATCH_ID.pattern}$")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 20,
    ) -> MessageBatchListOut:
        if before_id is not None and after_id is not None:
            raise InvalidInput(
                Problem(
                    "invalid_request", "Two cursors", "Give before_id or after_id, not both.", "/before_id"
                )
            )
        older, newer = _anchor("after_id", after_id), _anchor("before_id", before_id)
        views, has_more = await dropin.page(
            app_state(state).db, ANTHROPIC_ORIGIN, caller_of(request), limit, after_id=older, before_id=newer
        )
        base = base_url(request)
        data = [message_batch(v, base) for v in views]
        return MessageBatchListOut(
            data, has_more, data[0].id if data else None, data[-1].id if data else None
        )

    @post(
        "/{message_batch_id:str}/cancel",
        status_code=HTTP_200_OK,
        summary="Cancel a Message Batch",
        responses=documented_errors({**MISSING, 400: "The batch has ended"}),
    )
    async def cancel(
        self, message_batch_id: FromPath[str], request: HttpRequest, state: State
    ) -> MessageBatchOut:
        app = app_state(state)
        caller = caller_of(request)
        batch_id = batch_id_of(message_batch_id)
        await _view(app, batch_id, caller)  # 404 before acting on a batch of another origin
        try:
            await app.actions.cancel_batch(batch_id, caller, via="anthropic")
        except Conflict:
            # Cancelling twice answers the batch, as Anthropic does; an ended batch is refused.
            if (await _view(app, batch_id, caller)).cancel_initiated_at is None:
                raise
        return message_batch(await _view(app, batch_id, caller), base_url(request))

    @delete(
        "/{message_batch_id:str}",
        status_code=HTTP_200_OK,
        summary="Delete an ended Message Batch",
        responses=documented_errors({**MISSING, 400: "The batch is still processing"}),
    )
    async def remove(
        self, message_batch_id: FromPath[str], request: HttpRequest, state: State
    ) -> DeletedMessageBatchOut:
        app = app_state(state)
        caller = caller_of(request)
        batch_id = await _ended(app, message_batch_id, caller, "cancel it and delete it once it has ended")
        await app.actions.delete_batch(batch_id, caller)
        return DeletedMessageBatchOut(public_id(batch_id))

    @get(
        "/{message_batch_id:str}/results",
        summary="Stream a Message Batch's results (JSONL)",
        media_type=JSONL,
        responses=documented_errors({**MISSING, 400: "The batch is still processing"}),
    )
    async def results(self, message_batch_id: FromPath[str], request: HttpRequest, state: State) -> Stream:
        app = app_state(state)
        caller = caller_of(request)
        batch_id = await _ended(app, message_batch_id, caller, "its results are available once it has ended")
        return Stream(_jsonl(app, batch_id), media_type=JSONL)
