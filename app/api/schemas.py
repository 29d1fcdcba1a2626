"""Response shapes of the native API; the OpenAPI schema is generated from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from app.broker import BrokerStatus
from app.config import Settings
from app.core.read.queries import BatchDetail, RequestDetail
from app.core.results import output_line
from app.core.runs.openai import tables as model_tables
from app.db.models import Batch, Delivery, DeliveryAttempt


class ErrorItem(msgspec.Struct):
    code: str
    title: str
    detail: str
    source: dict[str, str] = msgspec.field(default_factory=dict)


class ErrorBody(msgspec.Struct):
    errors: list[ErrorItem]


class AcceptedOut(msgspec.Struct):
    id: int
    custom_id: str
    status: str


class AttemptOut(msgspec.Struct):
    number: int
    started_at: datetime
    duration_ms: int
    outcome: str
    http_status: int | None
    error: str | None
    response_excerpt: str | None


class DeliveryOut(msgspec.Struct):
    id: str
    channel: str
    target: dict[str, Any]
    status: str
    attempts: int
    total_attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None
    attempt_log: list[AttemptOut]


class UsageOut(msgspec.Struct):
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


class RequestOut(msgspec.Struct):
    id: int
    custom_id: str
    status: str
    origin: str
    backend: str
    url: str
    model: str
    batch_id: int | None
    body: dict[str, Any]
    delivery_config: dict[str, Any] | None
    result: dict[str, Any] | None
    usage: UsageOut
    inference_attempts: int
    created_at: datetime
    submitted_at: datetime | None
    completed_at: datetime | None
    delivery: DeliveryOut | None


class RemoteOut(msgspec.Struct):
    """The batch at OpenAI: its id, status and files."""

    batch_id: str | None
    status: str | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    files_deleted_at: datetime | None


class BatchUsageOut(msgspec.Struct):
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int


class CostOut(msgspec.Struct):
    """Estimated US dollars at synchronous prices, at batch prices, and the saving."""

    synchronous_usd: float
    batch_usd: float
    saving_usd: float
    priced_as: str


class BatchOut(msgspec.Struct):
    id: int
    backend: str
    endpoint: str
    model: str
    status: str
    request_count: int
    bytes: int
    completed_count: int
    failed_count: int
    close_requested: bool
    error: dict[str, Any] | None
    created_at: datetime
    status_changed_at: datetime
    ready_at: datetime | None
    submitted_at: datetime | None
    finished_at: datetime | None
    wait_reason: str | None
    next_attempt_at: datetime | None
    estimated_tokens: int | None
    remote: RemoteOut | None
    usage: BatchUsageOut
    cost: CostOut | None


class EventOut(msgspec.Struct):
    from_status: str | None
    to_status: str
    reason: str | None
    at: datetime


class BatchDetailOut(BatchOut):
    events: list[EventOut] = msgspec.field(default_factory=list)


class BatchListOut(msgspec.Struct):
    data: list[BatchOut]
    next_before_id: int | None


class BackendOut(msgspec.Struct):
    name: str
    target: str
    reachable: bool
    detail: str


class HealthOut(msgspec.Struct):
    status: str
    database: str
    scheduler: str
    version: str
    rabbitmq: BrokerStatus | None = None
    backends: list[BackendOut] = msgspec.field(default_factory=list)


class RedeliveredOut(msgspec.Struct):
    batch_id: int
    redelivered: int


class DeletedOut(msgspec.Struct):
    batch_id: int
    deleted_requests: int


def request_out(detail: RequestDetail) -> RequestOut:
    r = detail.request
    finished = r.response is not None or r.error is not None
    return RequestOut(
        id=r.id,
        custom_id=r.custom_id,
        status=r.status,
        origin=r.origin,
        backend=r.backend,
        url=r.endpoint,
        model=r.model,
        batch_id=r.batch_id,
        body=r.body,
        delivery_config=r.delivery,
        result=output_line(r) if finished else None,
        usage=UsageOut(r.prompt_tokens, r.completion_tokens, r.total_tokens),
        inference_attempts=r.inference_attempts,
        created_at=r.created_at,
        submitted_at=r.submitted_at,
        completed_at=r.completed_at,
        delivery=delivery_out(detail.delivery, detail.attempts) if detail.delivery else None,
    )


def delivery_out(d: Delivery, attempts: list[DeliveryAttempt]) -> DeliveryOut:
    return DeliveryOut(
        id=d.public_id,
        channel=d.channel,
        target=d.target,
        status=d.status,
        attempts=d.attempts,
        total_attempts=d.total_attempts,
        next_attempt_at=d.next_attempt_at,
        last_error=d.last_error,
        delivered_at=d.delivered_at,
        attempt_log=[
            AttemptOut(
                a.number, a.started_at, a.duration_ms, a.outcome, a.http_status, a.error, a.response_excerpt
            )
            for a in attempts
        ],
    )


_COMPUTED = frozenset({"remote", "usage", "cost"})


def _batch_fields(b: Batch, settings: Settings) -> dict[str, Any]:
    fields = {name: getattr(b, name) for name in BatchOut.__struct_fields__ if name not in _COMPUTED}
    remote = None
    if b.backend == "openai":
        remote = RemoteOut(
            b.remote_batch_id,
            b.remote_status,
            b.input_file_id,
            b.output_file_id,
            b.error_file_id,
            b.files_deleted_at,
        )
    usage = BatchUsageOut(b.input_tokens, b.cached_tokens, b.output_tokens, b.reasoning_tokens)
    cost = None
    if found := model_tables.batch_cost(b, settings):
        cost = CostOut(
            round(found.synchronous, 6), round(found.batch, 6), round(found.saving, 6), found.priced_as
        )
    return {**fields, "remote": remote, "usage": usage, "cost": cost}


def batch_out(b: Batch, settings: Settings) -> BatchOut:
    return BatchOut(**_batch_fields(b, settings))


def batch_detail_out(detail: BatchDetail, settings: Settings) -> BatchDetailOut:
    events = [EventOut(e.from_status, e.to_status, e.reason, e.at) for e in detail.events]
    return BatchDetailOut(**_batch_fields(detail.batch, settings), events=events)
