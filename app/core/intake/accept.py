"""Intake: validate one request, route it to its backend and insert it as pending. Shared by
every face."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from app.core import owner_limits
from app.core.intake import group_commit, usual
from app.core.intake.schema import (
    DeliveryConfigIn,
    RabbitMQDelivery,
    RequestIn,
    StoredConfig,
    WebhookDelivery,
    problem,
    stored_config,
    with_default_model,
)
from app.core.intake.webhook_url import webhook_host, webhook_port
from app.core.rules import routing, storable
from app.core.rules.errors import Conflict, InvalidInput, MalformedInput, Problem
from app.core.rules.owners import ADMIN, Caller
from app.core.runs.lines import input_line
from app.db.session import Database
from app.ground import jsontext, metrics, sealing
from app.ground.clock import utcnow
from app.ground.config import Settings
from app.ground.statuses import RequestStatus
from app.net import destinations, own_addresses
from app.net.destinations import rabbitmq_refusal

# Each origin's counter: labels() checks and locks on every call (2% of intake's CPU time).
_accepted: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Accepted:
    id: int
    custom_id: str
    status: str


def parse(raw: bytes | str) -> Any:
    """Decode JSON, or raise MalformedInput; InvalidInput when it holds text no database stores."""
    try:
        data = jsontext.strict_loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedInput(
            Problem("invalid_json", "Body is not JSON", f"The body is not valid JSON: {exc}.")
        ) from exc
    except RecursionError:
        raise MalformedInput(
            Problem("invalid_json", "Body nested too deeply", "The body's JSON is nested too deeply.")
        ) from None
    if (pointer := storable.first_unstorable(raw, data)) is not None:
        raise InvalidInput(
            Problem(
                "invalid_text",
                "Text that cannot be stored",
                storable.UNSTORABLE,
                pointer,
            )
        )
    return data


def validate(data: Any, settings: Settings, pointer_prefix: str = "") -> RequestIn:
    """Check a decoded request against the schema and the rules, reporting every problem at once."""
    return validate_routed(data, settings, pointer_prefix)[0]


def validate_routed(data: Any, settings: Settings, pointer_prefix: str = "") -> tuple[RequestIn, str]:
    """validate(), with the backend the request runs on (as route() would say)."""
    if isinstance(data, dict) and "body" in data:
        data = {**data, "body": with_default_model(data["body"], settings.local_default_model)}
    try:
        request = RequestIn.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(*(problem(error, pointer_prefix) for error in exc.errors())) from None
    problems = []
    size = request.line_bytes
    if size > settings.batch_max_bytes:
        problems.append(
            Problem(
                "request_too_large",
                "Request larger than a batch",
                f"The request is {size} bytes as a batch line; "
                f"a whole batch may hold {settings.batch_max_bytes} (BATCH_MAX_BYTES).",
                pointer_prefix + "/body",
            )
        )
    problems += _delivery_problems(request.delivery_config, settings, pointer_prefix)
    placed = routing.place(settings, request.body.model, request.backend, request.complete_by, pointer_prefix)
    if isinstance(placed, Problem):
        problems.append(placed)
    if problems:
        raise InvalidInput(*problems)
    assert isinstance(placed, str)
    return request, placed


@dataclass(frozen=True, slots=True)
class Checked:
    """A valid request, as its row stores it."""

    custom_id: str
    endpoint: str
    model: str
    body: dict[str, Any]
    body_bytes: int  # as one line of a batch input file
    delivery: StoredConfig
    backend: str  # the one it runs on
    complete_by: datetime | None


def checked(data: Any, settings: Settings) -> Checked:
    """What validate_routed() finds, as stored; a request of the usual shape is checked without
    pydantic (app.core.intake.usual), anything else, and every refusal, by the schema."""
    if (found := _usual(data, settings)) is not None:
        return found
    return by_schema(data, settings)


def by_schema(data: Any, settings: Settings) -> Checked:
    """checked() by the schema (pydantic) alone."""
    request, backend = validate_routed(data, settings)
    return Checked(
        request.custom_id,
        request.url,
        request.body.model,
        request.body_dict,
        request.line_bytes,
        stored_config(request.delivery_config),
        backend,
        request.complete_by,
    )


def _usual(data: Any, settings: Settings) -> Checked | None:
    """The request when every rule surely holds; None sends it to the schema."""
    if (shape := usual.head(data)) is None:
        return None
    custom_id, url, body = shape
    named, backend = usual.chosen_backend(data)
    if not named or (modelled := usual.model_of(body, settings.local_default_model)) is None:
        return None
    model, stored_body = modelled
    if type(placed := routing.place(settings, model, backend, None, "")) is not str:
        return None
    if (delivery := _usual_delivery(data.get("delivery_config"), settings)) is None:
        return None
    size = len(input_line(custom_id, url, stored_body).encode())
    if size > settings.batch_max_bytes:
        return None
    return Checked(custom_id, url, model, stored_body, size, delivery, placed, None)


def _usual_delivery(config: Any, settings: Settings) -> StoredConfig | None:
    """A delivery config as stored when it surely passes (the two commonest shapes checked by
    hand, others by their own schema, cheaper than the whole request's); else None."""
    if (plain := usual.plain_delivery(config)) is None:
        try:
            return validate_delivery_config(config, settings)
        except InvalidInput:
            return None
    kind, url = plain
    if url is None:
        return {"type": kind}
    if webhook_url_problem(url, settings, "") is not None:
        return None
    return {"type": kind, "webhook_url": url}


def route(request: RequestIn, settings: Settings) -> str:
    """The backend a validated request runs on: its own choice, else the first that serves its
    model (and can make its complete_by)."""
    placed = routing.place(settings, request.body.model, request.backend, request.complete_by, "")
    assert isinstance(placed, str), "validate() refuses a request no backend can run"
    return placed


def validate_delivery_config(data: Any, settings: Settings) -> StoredConfig:
    """Check a delivery config by the same rules as intake; returns it as stored."""
    try:
        config = DeliveryConfigIn.model_validate({"delivery_config": data}).delivery_config
    except ValidationError as exc:
        raise InvalidInput(*(problem(error, "") for error in exc.errors())) from None
    if problems := _delivery_problems(config, settings, ""):
        raise InvalidInput(*problems)
    return stored_config(config)


def _delivery_problems(config: Any, settings: Settings, pointer_prefix: str) -> list[Problem]:
    """The rules a schema cannot say (where deliveries may go), for each destination named."""
    if not isinstance(config, list):
        return _destination_problems(config, settings, pointer_prefix + "/delivery_config")
    return [
        problem
        for index, entry in enumerate(config)
        for problem in _destination_problems(entry, settings, f"{pointer_prefix}/delivery_config/{index}")
    ]


def webhook_url_problem(url: Any, settings: Settings, pointer: str) -> Problem | None:
    """Why `url` cannot be a webhook target (not an absolute http(s) URL without credentials, or
    an address the SSRF guard refuses), else None: the rule of every webhook Batchgate sends to."""
    try:
        if not isinstance(url, str):
            raise ValueError("a webhook URL must be a string")
        host = webhook_host(url)
    except ValueError as exc:
        return Problem("invalid_webhook_url", "Invalid webhook URL", f"{exc}.", pointer)
    why = destinations.check_host(host, settings.webhook_allow_private)
    if why is None and (why := own_addresses.of(settings).by_name(host, webhook_port(url))) is not None:
        why += "; a webhook there would call Batchgate itself"
    if why is not None:
        return Problem(
            "invalid_webhook_url",
            "Webhook target not allowed",
            f"Deliveries cannot go to {host}: {why}.",
            pointer,
        )
    return None


def _destination_problems(delivery: Any, settings: Settings, pointer: str) -> list[Problem]:
    problems = []
    if isinstance(delivery, WebhookDelivery) and (
        refused := webhook_url_problem(delivery.webhook_url, settings, pointer + "/webhook_url")
    ):
        problems.append(refused)
    if isinstance(delivery, RabbitMQDelivery) and not settings.rabbitmq_url:
        problems.append(
            Problem(
                "rabbitmq_not_configured",
                "RabbitMQ delivery is off",
                "This gateway has no RABBITMQ_URL, so it cannot deliver to RabbitMQ; "
                "use a webhook or 'none', or ask the operator to configure RabbitMQ.",
                pointer + "/type",
            )
        )
    elif isinstance(delivery, RabbitMQDelivery) and (
        why := rabbitmq_refusal(settings, delivery.rabbitmq_queue, delivery.rabbitmq_exchange)
    ):
        field = "rabbitmq_queue" if delivery.rabbitmq_queue else "rabbitmq_exchange"
        problems.append(
            Problem(
                "destination_not_allowed",
                "RabbitMQ destination not allowed",
                f"Deliveries cannot go there: {why}; ask the operator to add it.",
                pointer + "/" + field,
            )
        )
    return problems


def already_accepted(custom_id: str, same: bool, pointer: str) -> Problem:
    """The problem of a custom_id already stored: by this very request (`same`, a resend) or by
    another one."""
    which = "was already accepted" if same else "was already accepted with a different request"
    message = f"A request with custom_id {custom_id!r} {which}."
    return Problem("duplicate_custom_id", "Duplicate custom_id", message, pointer)


class Duplicate(Conflict):
    """The custom_id is taken. `same` says whether by this very request (a resend, which a
    consumer acknowledges) or by a different one (a client's mistake, never to be dropped)."""

    def __init__(self, same: bool, *problems: Problem) -> None:
        super().__init__(*problems)
        self.same = same


async def accept(
    db: Database, settings: Settings, data: Any, origin: str = "api", caller: Caller = ADMIN
) -> Accepted:
    """Validate and insert one request of `caller`'s as pending (committed, in a group with the
    rows that arrive meanwhile); raise Conflict on a duplicate custom_id in the caller's scope,
    TooMany or Forbidden past its team's limits."""
    request = checked(data, settings)
    await owner_limits.admit(db, settings, caller, [request.body_bytes])
    sealer = sealing.sealer(settings.secrets_key)
    row = {
        "scope": caller.scope,
        "owner": caller.owner,
        "custom_id": request.custom_id,
        "origin": origin,
        "backend": request.backend,
        "endpoint": request.endpoint,
        "model": request.model,
        "body": request.body,
        "body_bytes": request.body_bytes,
        # Header values are secrets: encrypted at rest when SECRETS_KEY is set.
        "delivery": sealer.seal_headers(request.delivery),
        "complete_by": request.complete_by,
        "created_at": utcnow(),
    }
    outcome = await group_commit.writer(db).insert(row)
    if isinstance(outcome, group_commit.Taken):
        same = outcome.same_as(row, sealer.open_headers)
        raise Duplicate(same, already_accepted(request.custom_id, same, "/custom_id"))
    (_accepted.get(origin) or _accepted.setdefault(origin, metrics.ACCEPTED.labels(origin))).inc()
    return Accepted(id=outcome.id, custom_id=request.custom_id, status=RequestStatus.PENDING)
