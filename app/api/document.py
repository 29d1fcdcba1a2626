"""The OpenAPI JSON as served: what Litestar cannot see filled in.

Seven routes read their body raw (to refuse every problem in their face's error shape, or to
stream it), so Litestar documents no body for them; their schemas are added here. Litestar also
writes an int64 bound (a path parameter's or a body field's) as a float, which rounds it up past
the limit, and leaves out `additionalProperties: false` of the bodies that refuse unknown fields,
and bounds of 0.
"""

from __future__ import annotations

from typing import Any

from litestar.openapi.plugins import JsonRenderPlugin

from app.api.destination_secrets import CLOSED_BODIES
from app.api.links import add_links
from app.api.recoveries import RECOVERY_IN
from app.core.actions.subscriptions import DESCRIPTION_MAX_CHARS, MAX_TYPES, MAX_VALUES, VALUE_MAX_CHARS
from app.core.dropin.anthropic import CUSTOM_ID, MAX_REQUESTS
from app.core.dropin.anthropic_params import ROLES
from app.core.dropin.file_store import EXPIRES_AFTER_MAX, EXPIRES_AFTER_MIN, UPLOAD_PURPOSES
from app.core.intake.schema import ENDPOINTS, WEBHOOK_URL_PATTERN, RequestIn
from app.core.subscriptions import FILTERS, SUBSCRIBABLE
from app.web.http import ROW_ID_MAX, HttpRequest

JSON = "application/json"

OPENAI_BATCH_IN = {
    "type": "object",
    "required": ["input_file_id", "endpoint", "completion_window"],
    "properties": {
        "input_file_id": {"type": "string", "minLength": 1, "description": "An uploaded file's id"},
        "endpoint": {"enum": list(ENDPOINTS)},
        "completion_window": {"enum": ["24h"]},
        "metadata": {
            "type": ["object", "null"],
            "maxProperties": 16,
            "propertyNames": {"maxLength": 64},
            "additionalProperties": {"type": "string", "maxLength": 512},
        },
        "output_expires_after": {
            "type": ["object", "null"],
            "description": "When the batch's output and error files expire, from their creation",
            "required": ["anchor", "seconds"],
            "properties": {
                "anchor": {"enum": ["created_at"]},
                "seconds": {"type": "integer", "minimum": EXPIRES_AFTER_MIN, "maximum": EXPIRES_AFTER_MAX},
            },
        },
    },
}

FILE_UPLOAD = {
    "type": "object",
    "required": ["purpose", "file"],
    # In either order: the file streams to disk as it arrives, a purpose after it is checked then.
    "properties": {
        "purpose": {"enum": list(UPLOAD_PURPOSES)},
        "file": {"type": "string", "format": "binary"},
    },
}

# A message: its content a string or a list of blocks, each with a type (which types run is the
# translation's decision, made when the request runs; a text block's text is a string).
MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": list(ROLES)},
        "content": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"type": "string"}},
                    },
                },
            ]
        },
    },
}

MESSAGE_BATCH_IN = {
    "type": "object",
    "required": ["requests"],
    "properties": {
        "requests": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_REQUESTS,
            "description": "custom_ids are unique within the list",
            "items": {
                "type": "object",
                "required": ["custom_id", "params"],
                "properties": {
                    "custom_id": {"type": "string", "pattern": f"^{CUSTOM_ID.pattern}$"},
                    "params": {
                        "type": "object",
                        "required": ["model", "max_tokens", "messages"],
                        "properties": {
                            "model": {"type": "string", "minLength": 1},
                            "max_tokens": {"type": "integer", "minimum": 1},
                            "messages": {"type": "array", "items": MESSAGE},
                        },
                    },
                },
            },
        }
    },
}


# POST /api/subscriptions (url and event_types required) and PATCH (the fields it changes).
SUBSCRIPTION_FIELDS = {
    "url": {"type": "string", "pattern": WEBHOOK_URL_PATTERN, "description": "Checked like a webhook target"},
    "event_types": {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_TYPES,
        "items": {"enum": sorted(SUBSCRIBABLE)},
    },
    "filters": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            name: {
                "type": "array",
                "maxItems": MAX_VALUES,
                "items": {"type": "string", "minLength": 1, "maxLength": VALUE_MAX_CHARS},
            }
            for name in FILTERS
        },
    },
    "description": {"type": "string", "maxLength": DESCRIPTION_MAX_CHARS},
    "enabled": {"type": "boolean"},
}
SUBSCRIPTION_IN = {
    "type": "object",
    "required": ["url", "event_types"],
    "additionalProperties": False,
    "properties": SUBSCRIPTION_FIELDS,
}
SUBSCRIPTION_CHANGE = {"type": "object", "additionalProperties": False, "properties": SUBSCRIPTION_FIELDS}


def _body(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {media_type: {"schema": schema}}}


# POST /api/requests/bulk: an array of what POST /api/requests takes, or the same as JSONL.
BULK_IN = {
    "required": True,
    "content": {
        JSON: {
            "schema": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/RequestIn"},
                "description": "At most API_BULK_MAX_ITEMS (50,000) requests; each is answered on its own",
            }
        },
        "application/x-ndjson": {
            "schema": {
                "type": "string",
                "description": "One RequestIn a line (JSONL)",
            }
        },
    },
}


# Bounds of 0 that Litestar leaves out of the document (it tests a bound for truth): without
# them a negative rate or budget looks valid, and is refused with a 400.
ZERO_MINIMUMS = (
    ("DestinationIn", "rate_per_second"),
    ("LimitsIn", "rate_per_second"),
    ("OwnerLimitsIn", "budget_usd"),
)


class SchemaJson(JsonRenderPlugin):
    """Serves the OpenAPI JSON with the raw-read bodies and exact row id bounds filled in."""

    def render(self, request: HttpRequest, openapi_schema: dict[str, Any]) -> bytes:
        schema = RequestIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components = openapi_schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(schema.pop("$defs", {}))
        components["RequestIn"] = schema
        for name, field in ZERO_MINIMUMS:
            if (bounded := components.get(name, {}).get("properties", {}).get(field)) is not None:
                bounded["minimum"] = 0
        for body in components.values():
            for field_schema in body.get("properties", {}).values() if isinstance(body, dict) else []:
                if isinstance(field_schema, dict) and field_schema.get("maximum") == float(ROW_ID_MAX):
                    field_schema["maximum"] = ROW_ID_MAX
        for closed in CLOSED_BODIES:
            components.get(closed.__name__, {})["additionalProperties"] = False
        bodies = {
            "/api/requests": _body(JSON, {"$ref": "#/components/schemas/RequestIn"}),
            "/api/subscriptions": _body(JSON, SUBSCRIPTION_IN),
            "/v1/batches": _body(JSON, OPENAI_BATCH_IN),
            "/v1/files": _body("multipart/form-data", FILE_UPLOAD),
            "/v1/messages/batches": _body(JSON, MESSAGE_BATCH_IN),
            "/api/requests/bulk": BULK_IN,
            "/api/recoveries": _body(JSON, RECOVERY_IN),
        }
        paths = openapi_schema.get("paths", {})
        for path, body in bodies.items():
            if (operation := paths.get(path, {}).get("post")) is not None:
                operation["requestBody"] = body
        if (change := paths.get("/api/subscriptions/{subscription_id}", {}).get("patch")) is not None:
            change["requestBody"] = _body(JSON, SUBSCRIPTION_CHANGE)
        # No body rotates to a generated secret: Litestar marks the optional body required.
        rotate = paths.get("/api/destinations/{destination_id}/secret/rotate", {}).get("post", {})
        if "requestBody" in rotate:
            rotate["requestBody"]["required"] = False
        for operations in paths.values():
            for operation in operations.values():
                for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                    if parameter.get("schema", {}).get("maximum") == float(ROW_ID_MAX):
                        parameter["schema"]["maximum"] = ROW_ID_MAX
        add_links(paths)
        return super().render(request, openapi_schema)
