"""Intake: validate one request and insert it as pending. Shared by every face."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import httpx
from advanced_alchemy.types import DateTimeUTC, JsonB
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import bindparam, text

from app.config import Backend, Settings
from app.core.rules.errors import Conflict, InvalidInput, MalformedInput, Problem
from app.core.runtime.clock import utcnow
from app.db.session import Database

ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations")
Endpoint = Literal[
    "/v1/responses", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations"
]


class WebhookDelivery(BaseModel):
    """Deliver the result by POSTing it to a URL."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["webhook"]
    webhook_url: str

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except Exception as exc:
            raise ValueError(f"{value!r} is not a URL") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("webhook_url must be an absolute http:// or https:// URL")
        if url.userinfo:
            raise ValueError("webhook_url must not contain credentials")
        return value


class RabbitMQDelivery(BaseModel):
    """Deliver the result as a message: to a queue (default exchange) or to an exchange."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["rabbitmq"]
    rabbitmq_queue: str | None = None
    rabbitmq_exchange: str | None = None
    routing_key: str | None = None

    @field_validator("rabbitmq_queue", "rabbitmq_exchange", "routing_key")
    @classmethod
    def _short_string(cls, value: str | None) -> str | None:
        # AMQP names are "short strings": at most 255 bytes of UTF-8.
        if value is not None and len(value.encode()) > 255:
            raise ValueError("must be at most 255 bytes (an AMQP short string)")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> RabbitMQDelivery:
        if bool(self.rabbitmq_queue) == bool(self.rabbitmq_exchange):
            raise ValueError(
                "give either rabbitmq_queue (a queue, through the default exchange) or "
                "rabbitmq_exchange with an optional routing_key, not both and not neither"
            )
        if self.routing_key is not None and not self.rabbitmq_exchange:
            raise ValueError("routing_key only applies with rabbitmq_exchange; a queue is its own key")
        if self.rabbitmq_exchange and self.routing_key is None:
            self.routing_key = ""
        return self


class NoDelivery(BaseModel):
    """Keep the result for pulling (GET /api/requests/{custom_id})."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["none"]


DeliveryConfig = Annotated[WebhookDelivery | RabbitMQDelivery | NoDelivery, Field(discriminator="type")]


class RequestBody(BaseModel):
    """The inference request body: `model` is required, everything else is passed through."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=255)


class RequestIn(BaseModel):
    """What `POST /api/requests` (and the RabbitMQ intake queue) accepts."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str = Field(min_length=1, max_length=512)

    @field_validator("custom_id")
    @classmethod
    def _addressable(cls, value: str) -> str:
        # The id is used in URL paths (GET /api/requests/{custom_id}); servers normalise empty,
        # '.' and '..' segments away, so such ids could never be read back.
        segments = value.split("/")
        if any(s in ("", ".", "..") for s in segments) or any(ord(ch) < 32 for ch in value):
            raise ValueError(
                "custom_id must not start or end with '/', contain '//', '.' or '..' segments, "
                "or control characters (it must be usable in a URL path)"
            )
        return value

    url: Endpoint
    method: Literal["POST"] = "POST"
    body: RequestBody
    delivery_config: DeliveryConfig
    # Where it runs; without it BACKEND_ROUTES (by model) and then DEFAULT_BACKEND decide.
    backend: Backend | None = None

    # Computed once: validation needs the size and the insert needs both.
    @cached_property
    def body_dict(self) -> dict[str, Any]:
        return self.body.model_dump()

    @cached_property
    def line_bytes(self) -> int:
        """Size of the request as one line of a batch input file."""
        return len(batch_line(self.custom_id, self.url, self.body_dict).encode())


@dataclass(frozen=True, slots=True)
class Accepted:
    id: int
    custom_id: str
    status: str


def parse(raw: bytes | str) -> Any:
    """Decode JSON or raise MalformedInput."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedInput(
            Problem("invalid_json", "Body is not JSON", f"The body is not valid JSON: {exc}.")
        ) from exc


def validate(data: Any, settings: Settings, pointer_prefix: str = "") -> RequestIn:
    """Check a decoded request against the schema and the rules, reporting every problem at once."""
    try:
        request = RequestIn.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(*(_problem(error, pointer_prefix) for error in exc.errors())) from None
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
    if route(request, settings) == "openai" and not settings.openai_api_key:
        problems.append(
            Problem(
                "openai_not_configured",
                "OpenAI backend is off",
                f"Requests for {request.body.model!r} run on OpenAI, but this gateway has no "
                "OPENAI_API_KEY; send 'backend': 'local' or ask the operator to configure OpenAI.",
                pointer_prefix + ("/backend" if request.backend else "/body/model"),
            )
        )
    if problems:
        raise InvalidInput(*problems)
    return request


def route(request: RequestIn, settings: Settings) -> str:
    """The backend a request runs on: its own choice, else BACKEND_ROUTES, else DEFAULT_BACKEND."""
    return request.backend or settings.backend_for(request.body.model)


class DeliveryConfigIn(BaseModel):
    """A delivery config on its own (an operator editing where a result goes)."""

    model_config = ConfigDict(extra="forbid")
    delivery_config: DeliveryConfig


def validate_delivery_config(data: Any, settings: Settings) -> dict[str, Any]:
    """Check a delivery config by the same rules as intake; returns it as stored."""
    try:
        config = DeliveryConfigIn.model_validate({"delivery_config": data}).delivery_config
    except ValidationError as exc:
        raise InvalidInput(*(_problem(error, "") for error in exc.errors())) from None
    if problems := _delivery_problems(config, settings, ""):
        raise InvalidInput(*problems)
    return config.model_dump(exclude_none=True)


def _delivery_problems(delivery: Any, settings: Settings, pointer_prefix: str) -> list[Problem]:
    problems = []
    if isinstance(delivery, WebhookDelivery) and settings.webhook_block_private_networks:
        host = httpx.URL(delivery.webhook_url).host
        if _is_private_literal(host):
            problems.append(
                Problem(
                    "invalid_webhook_url",
                    "Webhook target not allowed",
                    f"{host} is a private or loopback address and WEBHOOK_BLOCK_PRIVATE_NETWORKS is on.",
                    pointer_prefix + "/delivery_config/webhook_url",
                )
            )
    if isinstance(delivery, RabbitMQDelivery) and not settings.rabbitmq_url:
        problems.append(
            Problem(
                "rabbitmq_not_configured",
                "RabbitMQ delivery is off",
                "This gateway has no RABBITMQ_URL, so it cannot deliver to RabbitMQ; "
                "use a webhook or 'none', or ask the operator to configure RabbitMQ.",
                pointer_prefix + "/delivery_config/type",
            )
        )
    return problems


def batch_line(custom_id: str, url: str, body: dict[str, Any]) -> str:
    """One line of an OpenAI batch input file."""
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": url, "body": body}, separators=(",", ":")
    )


# Written as text() so SQLAlchemy compiles it once and caches it: the dialect-specific
# insert().on_conflict_do_nothing() has no cache key and was recompiled on every request, which
# cost more than the INSERT itself. ON CONFLICT DO NOTHING makes a duplicate an answer rather than
# an exception; the syntax is the same on PostgreSQL and SQLite (3.35+).
_INSERT = text(
    "INSERT INTO requests (custom_id, origin, backend, endpoint, model, body, body_bytes, delivery,"
    " status, inference_attempts, resubmits, created_at)"
    " VALUES (:custom_id, :origin, :backend, :endpoint, :model, :body, :body_bytes, :delivery,"
    " 'pending', 0, 0, :created_at)"
    " ON CONFLICT (custom_id) DO NOTHING RETURNING id"
).bindparams(
    bindparam("body", type_=JsonB),
    bindparam("delivery", type_=JsonB),
    bindparam("created_at", type_=DateTimeUTC(timezone=True)),
)


async def accept(db: Database, settings: Settings, data: Any, origin: str = "api") -> Accepted:
    """Validate and insert one request as pending; raise Conflict on a duplicate custom_id."""
    request = validate(data, settings)
    row = {
        "custom_id": request.custom_id,
        "origin": origin,
        "backend": route(request, settings),
        "endpoint": request.url,
        "model": request.body.model,
        "body": request.body_dict,
        "body_bytes": request.line_bytes,
        "delivery": request.delivery_config.model_dump(exclude_none=True),
        "created_at": utcnow(),
    }
    async with db.engine.begin() as connection:
        new_id = (await connection.execute(_INSERT, row)).scalar_one_or_none()
    if new_id is None:
        raise Conflict(
            Problem(
                "duplicate_custom_id",
                "Duplicate custom_id",
                f"A request with custom_id {request.custom_id!r} was already accepted.",
                "/custom_id",
            )
        )
    return Accepted(id=new_id, custom_id=request.custom_id, status="pending")


def _is_private_literal(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


_FIELD_CODES = {
    ("url",): ("invalid_url", "Unsupported url"),
    ("method",): ("invalid_method", "Unsupported method"),
    ("body", "model"): ("invalid_model", "Invalid model"),
    ("delivery_config", "webhook_url"): ("invalid_webhook_url", "Invalid webhook URL"),
    ("delivery_config", "type"): ("invalid_delivery_type", "Unsupported delivery type"),
    ("delivery_config",): ("invalid_delivery_type", "Unsupported delivery type"),
    ("delivery_config", "rabbitmq_queue"): ("invalid_rabbitmq_target", "Invalid RabbitMQ target"),
    ("delivery_config", "rabbitmq_exchange"): ("invalid_rabbitmq_target", "Invalid RabbitMQ target"),
    ("delivery_config", "routing_key"): ("invalid_rabbitmq_target", "Invalid RabbitMQ target"),
    ("custom_id",): ("invalid_custom_id", "Invalid custom_id"),
    ("backend",): ("invalid_backend", "Unknown backend"),
}


def _problem(error: Any, prefix: str) -> Problem:
    loc = [str(part) for part in error["loc"]]
    # Pydantic puts the discriminator's value in the path of a tagged union; users never wrote it.
    if len(loc) > 1 and loc[0] == "delivery_config" and loc[1] in ("webhook", "rabbitmq", "none"):
        del loc[1]
    pointer = prefix + "/" + "/".join(loc) if loc else prefix
    kind = error["type"]
    if kind == "extra_forbidden":
        return Problem(
            "unknown_field", "Unknown field", f"'{loc[-1]}' is not an accepted field here.", pointer
        )
    if kind == "missing":
        code = "missing_model" if loc == ["body", "model"] else "missing_field"
        return Problem(code, "Missing field", f"'{loc[-1]}' is required.", pointer)
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        code, title = _FIELD_CODES[("delivery_config",)]
        return Problem(
            code, title, "delivery_config.type must be one of 'webhook', 'rabbitmq', 'none'.", pointer
        )
    if kind == "value_error" and loc == ["delivery_config"]:
        code, title = "invalid_rabbitmq_target", "Invalid RabbitMQ target"  # the only model-level rule
    else:
        code, title = _FIELD_CODES.get(tuple(loc), ("invalid_value", "Invalid value"))
    message = str(error["msg"]).removeprefix("Value error, ")
    if tuple(loc) == ("url",):
        message = f"url must be one of {', '.join(ENDPOINTS)}."
    return Problem(code, title, f"{'.'.join(loc) or 'body'}: {message}", pointer)
