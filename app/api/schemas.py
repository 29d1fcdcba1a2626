"""Response shapes of the native API; the OpenAPI schema is generated from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from app.core.driver.status import BrokerStatus, EmbeddedStatus
from app.core.intake.bulk import BulkOutcome
from app.core.read.failing import FailingDestination
from app.core.read.queries import BatchDetail, RequestDetail, RequestRow
from app.core.results import output_line
from app.core.rules import routing
from app.core.rules.errors import Problem
from app.core.runs import costs
from app.db.models import Batch, Delivery, DeliveryAttempt
from app.ground.config import Settings
from app.ground.webhook_headers import redact


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


# gc=False: 50,000 of them in one answer, never in a reference cycle; the collector skips them.
class BulkItemOut(msgspec.Struct, omit_defaults=True, gc=False):
    """One item of a bulk body, at its index: accepted (`id`, status `pending`) or `rejected`
    with its `errors` (pointers start with the index)."""

    index: int
    status: str
    custom_id: str | None = None
    id: int | None = None
    errors: list[ErrorItem] | None = None


class BulkOut(msgspec.Struct):
    accepted: int
    rejected: int
    results: list[BulkItemOut]


class AttemptOut(msgspec.Struct):
    number: int
    started_at: datetime
    duration_ms: int
    outcome: str
    http_status: int | None
    error: str | None
    response_excerpt: str | None
    worker: str | None = None  # the process that sent it (host:pid)


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


class _RequestHead(msgspec.Struct):
    """What every answer about a request starts with (a subclass adds its own fields after)."""

    id: int
    custom_id: str
    status: str
    origin: str
    owner: str  # the team whose key created it ('' for none: an admin key, RabbitMQ intake)
    backend: str
    url: str
    model: str
    batch_id: int | None


# One destination (an object) or several (a list of them), as the request gave it.
StoredDeliveryConfig = dict[str, Any] | list[dict[str, Any]]


class RequestOut(_RequestHead):
    body: dict[str, Any]
    delivery_config: StoredDeliveryConfig | None
    result: dict[str, Any] | None
    usage: UsageOut
    inference_attempts: int
    created_at: datetime
    submitted_at: datetime | None
    completed_at: datetime | None
    complete_by: datetime | None  # its deadline, when it has one
    delivery: DeliveryOut | None  # its latest delivery (of one destination when it fans out)
    # Over every destination: delivered only once each is (pending or retrying while any is).
    delivery_status: str | None = None
    # Each destination's delivery, with its own attempts and status.
    deliveries: list[DeliveryOut] = msgspec.field(default_factory=list)


class RequestSummaryOut(_RequestHead):
    """A request as GET /api/requests lists it: no body or result (read the one request for
    those), its delivery status over all its destinations and their attempts, summed."""

    delivery_config: StoredDeliveryConfig | None
    delivery_status: str | None
    delivery_attempts: int
    error: dict[str, Any] | None
    usage: UsageOut
    created_at: datetime
    submitted_at: datetime | None
    completed_at: datetime | None


class RequestListOut(msgspec.Struct):
    data: list[RequestSummaryOut]
    next_before_id: int | None


class RemoteOut(msgspec.Struct):
    """The batch at OpenAI: its id, status and files."""

    batch_id: str | None
    status: str | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    files_deleted_at: datetime | None
    # In the remote batch's metadata (batchgate_submission_key): how a lost create is found again.
    submission_key: str | None
    # Tries at deleting the remote files once the batch ended, and the last failure (null once
    # they are deleted); tries stop at 5 (docs/openai-backend.md).
    files_delete_attempts: int = 0
    files_delete_error: str | None = None


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
    origin: str
    owner: str  # the team whose requests it runs ('' for none): batches never mix teams
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


class AnnouncementOut(msgspec.Struct):
    """The delivery of a batch event to BATCH_EVENTS_WEBHOOK_URL."""

    delivery_id: str
    type: str
    status: str
    attempts: int
    last_error: str | None
    delivered_at: datetime | None


class EventOut(msgspec.Struct):
    from_status: str | None
    to_status: str
    reason: str | None
    at: datetime
    announced: AnnouncementOut | None = None
    worker: str | None = None  # the process that wrote it (host:pid)


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


class HeldDestinationOut(msgspec.Struct):
    destination: str  # webhook origin (scheme://host:port) or rabbitmq:queue/… / rabbitmq:exchange/…
    breaker: str  # open or probing
    opened_at: datetime | None
    probe_at: datetime | None  # None: paused by an operator, held until resumed
    waiting: int  # its deliveries pending or retrying


class HealthOut(msgspec.Struct):
    status: str
    database: str
    scheduler: str
    version: str
    rabbitmq: BrokerStatus | None = None
    backends: list[BackendOut] = msgspec.field(default_factory=list)
    # Where deliveries are retrying now (a receiver down): shown, not fatal.
    failing_destinations: list[FailingDestination] = msgspec.field(default_factory=list)
    role: str = "all"  # what this process serves: all, api or worker (SERVE_ROLE)
    # Destinations whose deliveries are held (circuit breaker open or probing, or paused).
    held_destinations: list[HeldDestinationOut] = msgspec.field(default_factory=list)
    # The embedded model server (no LOCAL_BASE_URL), when this process runs one; else null.
    embedded: EmbeddedStatus | None = None


class RedeliveredOut(msgspec.Struct):
    batch_id: int
    redelivered: int


class DeletedOut(msgspec.Struct):
    batch_id: int
    deleted_requests: int


class PurgedOut(msgspec.Struct):
    """What a purge removed: ended batches and batchless requests older than `older_than_days`."""

    older_than_days: int
    batches: int
    requests: int
    files: int
    more: bool


def _columns(row: Any, struct: type[msgspec.Struct], **computed: Any) -> dict[str, Any]:
    """The struct's fields from the row's attributes of the same name, except those `computed`."""
    names = (name for name in struct.__struct_fields__ if name not in computed)
    return {**{name: getattr(row, name) for name in names}, **computed}


def request_out(detail: RequestDetail) -> RequestOut:
    r = detail.request
    finished = r.response is not None or r.error is not None
    return RequestOut(
        **_columns(
            r,
            RequestOut,
            url=r.endpoint,
            delivery_config=redact(r.delivery),
            result=output_line(r) if finished else None,
            usage=UsageOut(r.prompt_tokens, r.completion_tokens, r.total_tokens),
            delivery=delivery_out(detail.delivery, detail.attempts) if detail.delivery else None,
            delivery_status=detail.delivery_status,
            deliveries=[delivery_out(t.delivery, t.attempts) for t in detail.deliveries],
        )
    )


def request_summary_out(row: RequestRow) -> RequestSummaryOut:
    r = row.request
    return RequestSummaryOut(
        **_columns(
            r,
            RequestSummaryOut,
            url=r.endpoint,
            delivery_config=redact(r.delivery),
            delivery_status=row.delivery_status,
            delivery_attempts=row.delivery_attempts,
            usage=UsageOut(r.prompt_tokens, r.completion_tokens, r.total_tokens),
        )
    )


def delivery_out(d: Delivery, attempts: list[DeliveryAttempt]) -> DeliveryOut:
    log = [AttemptOut(**_columns(a, AttemptOut)) for a in attempts]
    return DeliveryOut(**_columns(d, DeliveryOut, id=d.public_id, target=redact(d.target), attempt_log=log))


def _batch_fields(b: Batch, settings: Settings) -> dict[str, Any]:
    remote = None
    if routing.runs_batches(settings, b.backend):
        remote = RemoteOut(
            b.remote_batch_id,
            b.remote_status,
            b.input_file_id,
            b.output_file_id,
            b.error_file_id,
            b.files_deleted_at,
            b.submission_key,
            b.files_delete_attempts,
            None if b.files_deleted_at else b.files_delete_error,
        )
    usage = BatchUsageOut(b.input_tokens, b.cached_tokens, b.output_tokens, b.reasoning_tokens)
    cost = None
    if found := costs.batch_cost(b, settings):
        cost = CostOut(
            round(found.synchronous, 6), round(found.batch, 6), round(found.saving, 6), found.priced_as
        )
    return _columns(b, BatchOut, remote=remote, usage=usage, cost=cost)


def batch_out(b: Batch, settings: Settings) -> BatchOut:
    return BatchOut(**_batch_fields(b, settings))


def batch_detail_out(detail: BatchDetail, settings: Settings) -> BatchDetailOut:
    events = [
        EventOut(
            e.from_status, e.to_status, e.reason, e.at, _announcement(detail.announced.get(e.id)), e.worker
        )
        for e in detail.events
    ]
    return BatchDetailOut(**_batch_fields(detail.batch, settings), events=events)


def _announcement(d: Delivery | None) -> AnnouncementOut | None:
    if d is None:
        return None
    kind = d.target["event"]["type"]
    return AnnouncementOut(d.public_id, kind, d.status, d.total_attempts, d.last_error, d.delivered_at)


def bulk_out(outcome: BulkOutcome) -> BulkOut:
    """The answer to a bulk body: the counts and every item's result, in input order."""
    results = [
        BulkItemOut(r.index, r.status, r.custom_id, r.id)
        if r.id is not None
        else BulkItemOut(r.index, r.status, r.custom_id, errors=[error_item(p) for p in r.problems])
        for r in outcome.results
    ]
    accepted = sum(1 for r in outcome.results if r.id is not None)
    return BulkOut(accepted, len(results) - accepted, results)


def error_item(p: Problem) -> ErrorItem:
    """A core problem in the error answers' item shape."""
    return ErrorItem(p.code, p.title, p.detail, {"pointer": p.pointer} if p.pointer is not None else {})
