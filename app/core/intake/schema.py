"""What a request may look like: the pydantic models intake validates against, and how their
errors become problems with a machine code, a human message and a JSON pointer."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.core.intake.webhook_url import webhook_host
from app.core.rules.errors import Problem
from app.core.rules.fanout import FANOUT_MAX, destination_identity
from app.core.runs.lines import input_line
from app.ground import webhook_headers

ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations")
# The longest custom_id and model any face takes: requests.custom_id is String(512) and
# requests.model String(255), and PostgreSQL refuses a longer value where SQLite keeps it.
CUSTOM_ID_MAX_CHARS, MODEL_MAX_CHARS = 512, 255
Endpoint = Literal[
    "/v1/responses", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations"
]


# What the validators below accept, as patterns for the OpenAPI document: an absolute http(s) URL
# without credentials, and an id whose '/'-separated segments are never empty, '.' or '..'.
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
WEBHOOK_URL_PATTERN = rf"^[hH][tT][tT][pP][sS]?://[A-Za-z0-9][A-Za-z0-9.-]*(:{_PORT})?([/?#][!-~]*)?$"
_SEGMENT = r"(?:[^/.\x00-\x1f]|\.[^/.\x00-\x1f]|\.\.[^/\x00-\x1f])[^/\x00-\x1f]*"
CUSTOM_ID_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"


def addressable(custom_id: str) -> bool:
    """Whether a custom_id can name its request in a URL path (GET /api/requests/{custom_id}):
    1 to CUSTOM_ID_MAX_CHARS characters, no control character, and no empty, '.' or '..'
    segment, which servers normalise away so the id could never be read back. The one rule;
    CUSTOM_ID_PATTERN says the same for the OpenAPI document."""
    return (
        0 < len(custom_id) <= CUSTOM_ID_MAX_CHARS
        and all(ord(ch) >= 32 for ch in custom_id)
        and not any(segment in ("", ".", "..") for segment in custom_id.split("/"))
    )


def _header_name(name: str) -> str:
    if (why := webhook_headers.name_problem(name)) is not None:
        kind = "reserved_header" if webhook_headers.reserved(name) else "invalid_header"
        raise PydanticCustomError(kind, "{why}", {"why": why})
    return name


def _header_value(value: str) -> str:
    # The message never quotes the value: it may be a secret.
    if (why := webhook_headers.value_problem(value)) is not None:
        raise PydanticCustomError("invalid_header", "{why}", {"why": why})
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]


class WebhookDelivery(BaseModel):
    """Deliver the result by POSTing it to a URL, with optional extra headers (secrets: every
    face shows them redacted, see app.ground.webhook_headers)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["webhook"]
    # The pattern documents the rule below for clients and fuzzers; the validator enforces it.
    webhook_url: str = Field(json_schema_extra={"pattern": WEBHOOK_URL_PATTERN})
    headers: dict[HeaderName, HeaderValue] | None = None

    @field_validator("headers")
    @classmethod
    def _bounded(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (why := webhook_headers.set_problem(value)) is not None:
            raise PydanticCustomError("invalid_header", "{why}", {"why": why})
        return value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        webhook_host(value)
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


OneDelivery = Annotated[WebhookDelivery | RabbitMQDelivery | NoDelivery, Field(discriminator="type")]
# One of several destinations (fan-out): 'none' is no destination, so it is not one of them.
FanOutEntry = Annotated[WebhookDelivery | RabbitMQDelivery, Field(discriminator="type")]


def _distinct(entries: list[WebhookDelivery | RabbitMQDelivery]) -> list[WebhookDelivery | RabbitMQDelivery]:
    seen: dict[tuple[str, ...], int] = {}
    for index, entry in enumerate(entries):
        first = seen.setdefault(destination_identity(entry.model_dump()), index)
        if first != index:
            raise PydanticCustomError(
                "duplicate_destination",
                "entry {index} is the same destination as entry {first}; each destination once",
                {"index": index, "first": first},
            )
    return entries


FanOut = Annotated[list[FanOutEntry], Field(min_length=1, max_length=FANOUT_MAX), AfterValidator(_distinct)]


def _how_many(value: Any) -> str:
    return "several" if isinstance(value, list) else "one"


# One destination (an object), or several (a list of them: the result goes to each, each its own
# delivery with its own attempts and status).
DeliveryConfig = Annotated[
    Annotated[OneDelivery, Tag("one")] | Annotated[FanOut, Tag("several")], Discriminator(_how_many)
]


StoredConfig = dict[str, Any] | list[dict[str, Any]]


def stored_config(config: Any) -> StoredConfig:
    """A validated delivery config as it is stored: an object, or a list of them."""
    if isinstance(config, list):
        return [entry.model_dump(exclude_none=True) for entry in config]
    dumped: dict[str, Any] = config.model_dump(exclude_none=True)
    return dumped


def with_default_model(body: Any, default: str | None) -> Any:
    """A request body that names no model runs on the default model (LOCAL_DEFAULT_MODEL), when
    there is one: the body as stored and sent names it. A model given always wins; anything
    that is not a body is left to validation to refuse."""
    if default and isinstance(body, dict) and body.get("model") is None:
        return {**body, "model": default}
    return body


class RequestBody(BaseModel):
    """The inference request body: `model` is required (intake gives a body without one the
    default model first, when there is one), everything else is passed through."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=MODEL_MAX_CHARS)


class RequestIn(BaseModel):
    """What `POST /api/requests` (and the RabbitMQ intake queue) accepts."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str = Field(
        min_length=1, max_length=CUSTOM_ID_MAX_CHARS, json_schema_extra={"pattern": CUSTOM_ID_PATTERN}
    )

    @field_validator("custom_id")
    @classmethod
    def _addressable(cls, value: str) -> str:
        if not addressable(value):
            raise ValueError(
                "custom_id must not start or end with '/', contain '//', '.' or '..' segments, "
                "or control characters (it must be usable in a URL path)"
            )
        return value

    url: Endpoint
    method: Literal["POST"] = "POST"
    body: RequestBody
    delivery_config: DeliveryConfig
    # The name of the backend it runs on; without it, the first backend serving its model
    # (app.core.rules.routing). Checked against the backends at intake, not here.
    backend: str | None = Field(None, min_length=1, max_length=63)
    # When its result is due (RFC 3339, with a time zone): its batch closes early enough, a
    # backend that cannot make it is not used, and past it unfinished the request fails.
    complete_by: AwareDatetime | None = None

    # Computed once: validation needs the size and the insert needs both.
    @cached_property
    def body_dict(self) -> dict[str, Any]:
        # What model_dump() gives (model first, then the rest as sent), without its copy of every
        # nested value (5% of intake's CPU time): the extras are the decoded JSON as it came.
        return {"model": self.body.model, **(self.body.__pydantic_extra__ or {})}

    @cached_property
    def line_bytes(self) -> int:
        """Size of the request as one line of a batch input file."""
        return len(input_line(self.custom_id, self.url, self.body_dict).encode())


class DeliveryConfigIn(BaseModel):
    """A delivery config on its own (an operator editing where a result goes)."""

    model_config = ConfigDict(extra="forbid")
    delivery_config: DeliveryConfig


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
    ("complete_by",): ("invalid_complete_by", "Invalid complete_by"),
}


def problem(error: Any, prefix: str) -> Problem:
    loc = [str(part) for part in error["loc"]]
    if loc[:1] == ["delivery_config"]:
        loc = _delivery_loc(loc)
    # The rule a field breaks is the same in every destination of a list: codes ignore the index.
    key = loc[:1] + loc[2:] if loc[:1] == ["delivery_config"] and loc[1:2] and loc[1].isdigit() else loc
    pointer = prefix + "/" + "/".join(loc) if loc else prefix
    kind = error["type"]
    if kind == "extra_forbidden":
        return Problem(
            "unknown_field", "Unknown field", f"'{loc[-1]}' is not an accepted field here.", pointer
        )
    if kind == "missing":
        code = "missing_model" if loc == ["body", "model"] else "missing_field"
        return Problem(code, "Missing field", f"'{loc[-1]}' is required.", pointer)
    if key[:2] == ["delivery_config", "headers"]:
        return _header_problem(error, loc, prefix)
    if (found := _list_problem(error, loc, pointer)) is not None:
        return found
    if kind == "value_error" and key == ["delivery_config"]:
        code, title = "invalid_rabbitmq_target", "Invalid RabbitMQ target"  # the only model-level rule
    else:
        code, title = _FIELD_CODES.get(tuple(key), ("invalid_value", "Invalid value"))
    message = str(error["msg"]).removeprefix("Value error, ")
    if tuple(loc) == ("url",):
        message = f"url must be one of {', '.join(ENDPOINTS)}."
    return Problem(code, title, f"{'.'.join(loc) or 'body'}: {message}", pointer)


def _delivery_loc(loc: list[str]) -> list[str]:
    """A delivery_config error's path as the user wrote it: without pydantic's tags for one or
    several destinations and for the delivery type (a list entry keeps its index)."""
    rest = loc[1:]
    several = rest[:1] == ["several"]
    if rest[:1] in (["one"], ["several"]):
        rest = rest[1:]
    head = ["delivery_config"]
    if several and rest and rest[0].isdigit():
        head, rest = [*head, rest[0]], rest[1:]
    if rest[:1] in (["webhook"], ["rabbitmq"], ["none"]):
        rest = rest[1:]
    return head + rest


def _list_problem(error: Any, loc: list[str], pointer: str) -> Problem | None:
    """The problems of a delivery_config's type and of a list of destinations, else None."""
    kind, where = error["type"], ".".join(loc)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        code, title = _FIELD_CODES[("delivery_config",)]
        allowed = "'webhook', 'rabbitmq'" if len(loc) > 1 else "'webhook', 'rabbitmq', 'none'"
        return Problem(code, title, f"{where}.type must be one of {allowed}.", pointer)
    if loc != ["delivery_config"]:
        return None
    if kind == "too_long":
        return Problem(
            "too_many_destinations",
            "Too many destinations",
            f"delivery_config lists more than {FANOUT_MAX} destinations; at most {FANOUT_MAX}.",
            pointer,
        )
    if kind == "too_short":
        return Problem(
            "invalid_delivery_type",
            "No destination",
            'delivery_config: an empty list names no destination; give one or more, or {"type": "none"}.',
            pointer,
        )
    if kind == "duplicate_destination":
        return Problem(
            "duplicate_destination", "Destination listed twice", f"{where}: {error['msg']}.", pointer
        )
    return None


def pointer_token(name: str) -> str:
    """`name` as one token of a JSON pointer (RFC 6901: `~` and `/` escaped)."""
    return name.replace("~", "~0").replace("/", "~1")


def _header_problem(error: Any, loc: list[str], prefix: str) -> Problem:
    """A problem with a webhook's extra headers, pointing at the header (never quoting a value)."""
    at = loc.index("headers")
    names = [part for part in loc[at + 1 :] if part != "[key]"]
    escaped = "".join("/" + pointer_token(n) for n in names)
    reserved = error["type"] == "reserved_header"
    code, title = (
        ("reserved_header", "Header set by Batchgate") if reserved else ("invalid_header", "Invalid header")
    )
    where = ".".join([*loc[: at + 1], *names[:1]])
    message = str(error["msg"]).removeprefix("Value error, ")
    return Problem(code, title, f"{where}: {message}", prefix + "/" + "/".join(loc[: at + 1]) + escaped)
