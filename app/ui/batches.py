"""Batches: the list, one batch, its files, and the operator's actions on it."""

from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from app.core.dropin import ids
from app.core.read import exports, queries
from app.core.rules import states
from app.core.runs import costs
from app.ui.render import done, list_page, page
from app.web.auth import caller_of
from app.web.forwarded import public_base
from app.web.http import HttpRequest, RowId
from app.web.state import app_state

STATUSES = list(states.BATCH_TRANSITIONS)
# The files a batch page offers for download, by name.
_FILES: dict[str, exports.Kind] = {"input.jsonl": "input", "output.jsonl": "output", "error.jsonl": "error"}


class BatchPages(Controller):
    path = "/batches"

    @get("/")
    async def index(
        self,
        request: HttpRequest,
        state: State,
        listing: NamedDependency[dict[str, Any]],
        backend: FromQuery[str] = "",
        sort: FromQuery[Literal["newest", "oldest", "status"]] = "newest",
        owner: FromQuery[str] = "",
    ) -> Any:
        app = app_state(state)
        query = queries.BatchQuery(**listing, backend=backend, sort=sort, owner=owner or None)
        result = await queries.batch_page(app.db, query, caller_of(request))
        caller = caller_of(request)
        backends, _, owners = await queries.batch_choices(app.db, caller)
        menus = {"statuses": STATUSES, "backends": backends, "owners": owners if caller.admin else []}
        return list_page(request, "batch", query, result, **menus)

    @get("/{batch_id:int}")
    async def show(self, request: HttpRequest, state: State, batch_id: RowId) -> Any:
        app = app_state(state)
        detail = await queries.batch_detail(app.db, batch_id, caller_of(request))
        outcomes = await queries.batch_outcomes(app.db, batch_id)
        face = ids.face_of(detail.batch)
        # The Anthropic face is mounted at /v1 of this same server (docs/api.md).
        results_url = public_base(request) + "/v1" + face.results_path if face and face.results_path else None
        return page(
            request,
            "batch.html",
            "_batch_live.html",
            batch=detail.batch,
            events=detail.events,
            announced=detail.announced,
            outcomes=outcomes,
            face=face,
            results_url=results_url,
            # A batch created before its size was recorded (an Anthropic one) has its lines' sizes.
            size=detail.batch.bytes or outcomes.body_bytes,
            cost=costs.batch_cost(detail.batch, await app.effective.fresh()),
        )

    @get("/{batch_id:int}/{filename:str}")
    async def download(
        self, request: HttpRequest, state: State, batch_id: RowId, filename: FromPath[str]
    ) -> Stream:
        kind = _FILES.get(filename)
        if kind is None:
            raise NotFoundException(f"No file {filename!r}: try input.jsonl, output.jsonl or error.jsonl.")
        await queries.batch_detail(app_state(state).db, batch_id, caller_of(request))  # 404: not its own
        chunks = await exports.batch_file(app_state(state).db, batch_id, kind)
        return Stream(
            chunks,
            media_type="application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="batch_{batch_id}_{kind}.jsonl"'},
        )

    @post("/{batch_id:int}/close")
    async def close(self, request: HttpRequest, state: State, batch_id: RowId) -> Any:
        await app_state(state).actions.close_batch(batch_id, caller_of(request))
        return done(request, f"Batch {batch_id} closes now.", _back(request, batch_id))

    @post("/{batch_id:int}/cancel")
    async def cancel(self, request: HttpRequest, state: State, batch_id: RowId) -> Any:
        await app_state(state).actions.cancel_batch(batch_id, caller_of(request), via="ui")
        # The timeline says how many requests the cancel ended; request_count would be the batch's size.
        return done(request, f"Batch {batch_id} cancelled.", _back(request, batch_id))

    @post("/{batch_id:int}/retry")
    async def retry(self, request: HttpRequest, state: State, batch_id: RowId) -> Any:
        await app_state(state).actions.retry_batch(batch_id, caller_of(request), via="ui")
        return done(request, f"Batch {batch_id} is ready to run again.", _back(request, batch_id))

    @post("/{batch_id:int}/redeliver")
    async def redeliver(
        self, request: HttpRequest, state: State, batch_id: RowId, only: FromQuery[str] = "failed"
    ) -> Any:
        moved = await app_state(state).actions.redeliver_batch(
            batch_id, caller_of(request), only_failed=only == "failed", via="ui"
        )
        what = "failed deliveries" if only == "failed" else "deliveries"
        return done(request, f"Redelivering {moved} {what} of batch {batch_id}.", _back(request, batch_id))

    @post("/{batch_id:int}/delete")
    async def delete(self, request: HttpRequest, state: State, batch_id: RowId) -> Any:
        removed = await app_state(state).actions.delete_batch(batch_id, caller_of(request))
        on_detail = _on_detail(request, batch_id)
        message = f"Batch {batch_id} deleted with {removed} requests."
        return done(request, message, "/batches", redirect=on_detail)


def _on_detail(request: HttpRequest, batch_id: int) -> bool:
    current = request.headers.get("hx-current-url") or request.headers.get("referer") or ""
    return current.split("?")[0].rstrip("/").endswith(f"/batches/{batch_id}")


def _back(request: HttpRequest, batch_id: int) -> str:
    return f"/batches/{batch_id}" if _on_detail(request, batch_id) else "/batches"
