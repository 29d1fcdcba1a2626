"""Checking real answers against the OpenAPI document the app publishes."""

from __future__ import annotations

from typing import Any

import httpx
from jsonschema import Draft202012Validator


def check(
    document: dict[str, Any],
    path: str,
    method: str,
    response: httpx.Response,
    status: int | None = None,
    code: str | None = None,
) -> None:
    """Assert the status (and error code) when given, then validate the response against the
    schema the document gives for its status."""
    if status is not None:
        got = f"{method.upper()} {path}: {response.status_code} {response.text}"
        assert response.status_code == status, got
    if code is not None:
        assert [e["code"] for e in response.json()["errors"]] == [code], response.text
    operation = document["paths"][path][method]
    spec = operation["responses"].get(str(response.status_code))
    assert spec is not None, (
        f"{method.upper()} {path} answered {response.status_code}, which is not documented"
    )
    schema = spec["content"]["application/json"]["schema"]
    root = {**schema, "components": document["components"]}
    errors = sorted(Draft202012Validator(root).iter_errors(response.json()), key=str)
    assert not errors, f"{method.upper()} {path} {response.status_code}: {errors[0].message}"
