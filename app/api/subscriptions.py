"""Native API: the operator's event subscriptions (/api/subscriptions): a webhook URL subscribed
to event types, with optional filters on model, backend and origin (docs/api.md)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.api.errors import documented_errors
from app.core.actions import subscriptions
from app.core.intake import accept as intake
from app.db.models import Subscription
from app.web.auth import admin_only
from app.web.http import HttpRequest, RowId, require_json
from app.web.state import app_state

NO_SUCH_SUBSCRIPTION = {404: "No such subscription"}
REFUSED = {422: "A field is not valid (every problem is listed); the URL is refused like a webhook target"}


class SubscriptionOut(msgspec.Struct):
    id: int
    url: str
    event_types: list[str]
    filters: dict[str, list[str]]
    description: str
    enabled: bool
    created_at: datetime
    updated_at: datetime


class SubscriptionListOut(msgspec.Struct):
    data: list[SubscriptionOut]


def subscription_out(row: Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        row.id,
        row.url,
        row.event_types,
        row.filters,
        row.description,
        row.enabled,
        row.created_at,
        row.updated_at,
    )


class SubscriptionController(Controller):
    path = "/subscriptions"
    # Shared by every team: an admin key's alone.
    guards = [admin_only]
    opt = {"admin_action": "manage subscriptions"}
    tags = ["subscriptions"]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Subscribe a webhook URL to event types",
        description="Body: `url`, `event_types` (e.g. `request.failed`, `batch.*`), optional `filters` "
        "(`model`, `backend`, `origin`: lists of names), `description`, `enabled`.",
        responses=documented_errors(
            {400: "Body is not JSON", 415: "Body not sent as application/json", **REFUSED}
        ),
        operation_id="createSubscription",
    )
    async def create(self, request: HttpRequest, state: State) -> SubscriptionOut:
        require_json(request.headers.get("content-type"))
        app = app_state(state)
        data = intake.parse(await request.body())
        return subscription_out(await subscriptions.create(app.db, await app.effective.fresh(), data))

    @get(
        "/",
        summary="Subscriptions, oldest first",
        responses=documented_errors(),
        operation_id="listSubscriptions",
    )
    async def list(self, state: State) -> SubscriptionListOut:
        rows = await subscriptions.listing(app_state(state).db)
        return SubscriptionListOut([subscription_out(row) for row in rows])

    @get(
        "/{subscription_id:int}",
        summary="A subscription",
        responses=documented_errors(NO_SUCH_SUBSCRIPTION),
        operation_id="getSubscription",
    )
    async def read(self, subscription_id: RowId, state: State) -> SubscriptionOut:
        return subscription_out(await subscriptions.one(app_state(state).db, subscription_id))

    @patch(
        "/{subscription_id:int}",
        status_code=HTTP_200_OK,
        summary="Change a subscription's fields (those given; the others stay)",
        responses=documented_errors({**NO_SUCH_SUBSCRIPTION, 400: "Body is not JSON", **REFUSED}),
        operation_id="changeSubscription",
    )
    async def change(self, subscription_id: RowId, request: HttpRequest, state: State) -> SubscriptionOut:
        require_json(request.headers.get("content-type"))
        app = app_state(state)
        data = intake.parse(await request.body())
        settings = await app.effective.fresh()
        return subscription_out(await subscriptions.change(app.db, settings, subscription_id, data))

    @delete(
        "/{subscription_id:int}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Delete a subscription, with its deliveries (queued ones too)",
        responses=documented_errors(NO_SUCH_SUBSCRIPTION),
        operation_id="deleteSubscription",
    )
    async def remove(self, subscription_id: RowId, state: State) -> None:
        await subscriptions.delete(app_state(state).db, subscription_id)
