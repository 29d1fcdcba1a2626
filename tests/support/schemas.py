"""Checking real answers against the OpenAPI document the app publishes."""

from __future__ import annotations

from typing import Any

import httpx
from jsonschema import Draft202012Validator


def check(document: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    """Validate a real response against the schema the document gives for its status."""
    operation = document["paths"][path][method]
    spec = operation["responses"].get(str(response.status_code))
    assert spec is not None, (
        f"{method.upper()} {path} answered {response.status_code}, which is not documented"
    )
    schema = spec["content"]["application/json"]["schema"]
    root = {**schema, "components": document["components"]}
    errors = sorted(Draft202012Validator(root).iter_errors(response.json()), key=str)
    assert not errors, f"{method.upper()} {path} {response.status_code}: {errors[0].message}"
