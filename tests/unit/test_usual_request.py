"""Single intake's check without pydantic (app.core.intake.usual, accept.checked): a request of the
usual shape is stored exactly as the schema's path stores it, and anything the schema refuses (or
that is unusual) goes to the schema, so every refusal keeps its code, message and pointer."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.intake import accept
from app.core.intake.accept import by_schema, checked
from app.core.intake.schema import RequestIn
from app.core.rules.errors import InvalidInput
from testkit import NO_DELIVERY, fast_settings, request_payload, webhook

HOOK = webhook("https://example.com/hook")
URL = "sqlite+aiosqlite:///unused.db"


def item(custom_id: str = "c", delivery: dict[str, Any] = HOOK, **changes: Any) -> dict[str, Any]:
    return {**request_payload(custom_id, delivery), **changes}


# Accepted without the schema.
USUAL: list[Any] = [
    item(),
    item("ünï/cödé-😀", NO_DELIVERY),
    item("a/b.c/..d", backend="local"),
    {k: v for k, v in item().items() if k != "method"},
    item(url="/v1/embeddings", body={"input": "x", "dimensions": 3, "model": "m"}),
    item(body={"messages": [], "model": "m", "n": None, "t": 1e16, "nested": {"a": [1, None, True]}}),
    item(body={"model": "ü" * 255}),
    item("x" * 512, backend=None),
    # Other delivery configs are checked by their own schema, still without RequestIn.
    item(delivery=[HOOK, webhook("https://example.com/other")]),
    item(delivery={**HOOK, "headers": {"X-Team": "a"}}),
]

# Refused, or taken only by the schema (complete_by, a body without a model given the default).
SCHEMA: list[Any] = [
    item(backend="openai"),  # no OPENAI_API_KEY
    item(backend="nope"),
    item(backend=""),
    item(backend=7),
    item(method="GET"),
    item(method=None),
    item(url="/v1/nope"),
    item("a//b"),
    item("./a"),
    item("a/"),
    item("a\tb"),
    item("a\u2028b"),
    item("x" * 513),
    item(7),  # type: ignore[arg-type]
    item(body={"model": ""}),
    item(body={"model": "m" * 256}),
    item(body={"model": 5}),
    item(body={"messages": []}),
    item(body={"model": None}),
    item(body=[]),
    item(body={"model": "m", "messages": [{"content": "x" * 5000}]}),  # past BATCH_MAX_BYTES
    item(delivery={"type": "webhook", "webhook_url": "http://169.254.169.254/x"}),
    item(delivery={"type": "webhook", "webhook_url": "ftp://example.com/x"}),
    item(delivery={"type": "webhook", "webhook_url": 5}),
    item(delivery={"type": "webhook"}),
    item(delivery={"type": "rabbitmq", "rabbitmq_queue": "q"}),  # no RABBITMQ_URL
    item(delivery={"type": "none", "extra": 1}),
    item(delivery={"type": "nothing"}),
    item(delivery=[]),
    item(delivery=None),  # type: ignore[arg-type]
    item(complete_by="2999-01-01T00:00:00Z"),
    {**item(), "more": 1},
    {k: v for k, v in item().items() if k != "url"},
    {k: v for k, v in item().items() if k != "delivery_config"},
    [item()],
]


@pytest.mark.parametrize("data", USUAL)
def test_the_usual_request_is_stored_as_the_schema_stores_it(data: Any) -> None:
    settings = fast_settings(URL, batch_max_bytes=4096)
    usual = accept._usual(data, settings)
    assert usual is not None
    expected = by_schema(data, settings)
    assert usual == expected
    assert list(usual.body) == list(expected.body)  # the same key order, as the JSON text is stored
    assert checked(data, settings) == expected


@pytest.mark.parametrize("data", SCHEMA)
def test_anything_else_goes_to_the_schema(data: Any) -> None:
    settings = fast_settings(URL, batch_max_bytes=4096)
    assert accept._usual(data, settings) is None
    try:
        expected = by_schema(data, settings)
    except InvalidInput as refused:
        with pytest.raises(InvalidInput) as answered:
            checked(data, settings)
        assert answered.value.problems == refused.problems
    else:
        assert checked(data, settings) == expected


@pytest.mark.parametrize(
    "body", [{"messages": []}, {"model": None, "messages": [], "n": 1}, {"n": 1, "model": None}]
)
def test_a_body_without_a_model_gets_the_default_as_the_schema_gives_it(body: dict[str, Any]) -> None:
    settings = fast_settings(URL, local_default_model="default-model")
    data = item(body=body)
    usual = accept._usual(data, settings)
    assert usual is not None and usual.model == "default-model"
    expected = by_schema(data, settings)
    assert usual == expected and list(usual.body) == list(expected.body)


def test_the_usual_request_builds_no_pydantic_request(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("RequestIn built for a usual request")

    settings = fast_settings(URL)
    expected = by_schema(item(), settings)
    monkeypatch.setattr(RequestIn, "model_validate", refuse)
    assert checked(item(), settings) == expected
