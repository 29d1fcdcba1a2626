"""Recovery in bulk: start a recover (a destination's failed deliveries, queued again) or a replay
(results sent again, as new deliveries, to a new target), follow its progress, cancel it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from app.api.errors import documented_errors
from app.core.intake import accept as intake
from app.core.recoveries.read import RecoveryDetail, list_recoveries, recovery_detail
from app.db.models import Recovery
from app.ground.webhook_headers import redact
from app.web.auth import admin_only
from app.web.http import HttpRequest, RowCursor, RowId, require_json
from app.web.state import app_state

NO_SUCH_RECOVERY = {404: "No such recovery"}

_TIME = {"type": "string", "description": "An ISO 8601 time; without a zone, UTC"}


def _ask(kind: str, required: list[str], **properties: Any) -> dict[str, Any]:
    """The body of one kind of recovery: its `kind`, the time range, and its own fields."""
    return {
        "type": "object",
        "title": kind.capitalize(),
        "required": ["kind", *required],
        "additionalProperties": False,
        "properties": {"kind": {"const": kind}, "since": _TIME, "until": _TIME, **properties},
    }


# POST /api/recoveries reads its body raw (errors in the API's own shape): its schema, for the
# OpenAPI document (app.api.document). A replay takes a batch_id, or since (and until).
RECOVERY_IN: dict[str, Any] = {
    "oneOf": [
        _ask(
            "recover",
            ["destination", "since"],
            destination={"type": "string", "minLength": 1, "maxLength": 300},
        ),
        _ask(
            "replay",
            ["delivery_config"],
            batch_id={"type": "integer", "minimum": 1},
            delivery_config={"type": "object", "description": "As a request's delivery_config"},
        ),
    ]
}


class RecoveryEventOut(msgspec.Struct):
    from_status: str | None
    to_status: str
    reason: str | None
    at: datetime


class RecoveryOut(msgspec.Struct):
    id: int
    kind: str  # recover | replay
    status: str  # queued | running | done | failed | cancelled
    destination: str | None  # recover: the destination key
    batch_id: int | None  # replay of one batch
    since: datetime | None
    until: datetime | None
    delivery_config: dict[str, Any] | None  # replay: where it sends (header values redacted)
    total: int  # rows in its scope when it was asked for
    done: int  # deliveries queued again (recover) or created (replay) so far
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # The replay's deliveries by status, so far; {} for a recover (its deliveries are the
    # destination's own: see GET /api/requests?delivery_status=...).
    deliveries: dict[str, int] = msgspec.field(default_factory=dict)
    events: list[RecoveryEventOut] = msgspec.field(default_factory=list)


class RecoveryListOut(msgspec.Struct):
    data: list[RecoveryOut]
    next_before_id: int | None


# The columns a RecoveryOut shows as they are.
_AS_STORED = (
    *("id", "kind", "status", "destination", "batch_id", "since", "until", "total", "done", "error"),
    *("created_at", "started_at", "finished_at"),
)


def recovery_out(recovery: Recovery, detail: RecoveryDetail | None = None) -> RecoveryOut:
    return RecoveryOut(
        **{column: getattr(recovery, column) for column in _AS_STORED},
        delivery_config=redact(recovery.target) if recovery.target else None,
        deliveries=detail.deliveries if detail else {},
        events=[RecoveryEventOut(e.from_status, e.to_status, e.reason, e.at) for e in detail.events]
        if detail
        else [],
    )


class RecoveryController(Controller):
    path = "/recoveries"
    # Shared by every team: an admin key's alone.
    guards = [admin_only]
    opt = {"admin_action": "run recoveries"}
    tags = ["recoveries"]

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        summary="Start a recover or a replay (202), or answer the same one already under way (200)",
        description='`{"kind": "recover", "destination": "https://host:443", "since": ISO time '
        '[, "until"]}` queues again every delivery_failed delivery to that destination created in '
        '[since, until). `{"kind": "replay", "batch_id": N | "since" [, "until"], '
        '"delivery_config": {...}}` sends the results of that batch\'s finished requests (or of '
        "those completed in the range) again, as new deliveries, to the target (checked as intake "
        "checks it). It runs in the background; follow `done` of `total` with GET.",
        responses={
            **documented_errors(
                {
                    400: "Body is not JSON",
                    404: "No such batch (replay of a batch)",
                    415: "Body not sent as application/json",
                    422: "A field is missing or wrong (code and pointer say which)",
                }
            ),
            200: ResponseSpec(
                RecoveryOut, description="The same one was already queued or running: this is it"
            ),
        },
        operation_id="createRecovery",
    )
    async def create(self, request: HttpRequest, state: State) -> Response[RecoveryOut]:
        require_json(request.headers.get("content-type"))
        asked = await app_state(state).actions.ask_recovery(intake.parse(await request.body()))
        status = HTTP_202_ACCEPTED if asked.created else HTTP_200_OK
        return Response(recovery_out(asked.recovery), status_code=status)

    @get(
        "/",
        summary="Recoveries and replays, newest first (keyset pagination)",
        operation_id="listRecoveries",
        responses=documented_errors(),
    )
    async def list(
        self,
        state: State,
        before_id: RowCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> RecoveryListOut:
        rows = await list_recoveries(app_state(state).db, before_id, limit)
        return RecoveryListOut([recovery_out(r) for r in rows], rows[-1].id if len(rows) == limit else None)

    @get(
        "/{recovery_id:int}",
        summary="A recovery with its progress (done of total) and timeline",
        responses=documented_errors(NO_SUCH_RECOVERY),
        operation_id="getRecovery",
    )
    async def read(self, recovery_id: RowId, state: State) -> RecoveryOut:
        detail = await recovery_detail(app_state(state).db, recovery_id)
        return recovery_out(detail.recovery, detail)

    @post(
        "/{recovery_id:int}/cancel",
        status_code=HTTP_202_ACCEPTED,
        summary="Stop a queued or running recovery; what it queued already stays queued",
        responses=documented_errors({**NO_SUCH_RECOVERY, 409: "Recovery has ended"}),
        operation_id="cancelRecovery",
    )
    async def cancel(self, recovery_id: RowId, state: State) -> RecoveryOut:
        return recovery_out(await app_state(state).actions.cancel_recovery(recovery_id))
