"""POST /api/requests on SQLite and PostgreSQL: a request of the usual shape is taken without
building pydantic's RequestIn (app.core.intake.usual) and stored as sent; a request the schema
refuses is answered by the schema as before (tests/unit/test_usual_request.py compares both
paths' rows and problems)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from app.core.intake.schema import RequestIn
from app.db.models import Request
from testkit import NO_DELIVERY, StartApp, fast_settings, request_payload, webhook


async def test_a_usual_request_is_stored_without_the_schema_and_a_bad_one_answered_by_it(
    database_url: str, start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []
    validate = RequestIn.model_validate

    def counted(*args: Any, **kwargs: Any) -> Any:
        built.append(args)
        return validate(*args, **kwargs)

    monkeypatch.setattr(RequestIn, "model_validate", counted)
    usual = request_payload("usual", webhook("https://example.com/hook"))
    usual["body"] = {"messages": [{"role": "user", "content": "hé"}], "model": "stand-in", "n": None}
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        answer = await app.client.post("/api/requests", json=usual)
        assert answer.status_code == 202, answer.text
        assert built == []
        bad = request_payload("bad", {"type": "webhook", "webhook_url": "ftp://example.com/x"})
        answer = await app.client.post("/api/requests", json=bad)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"] == [
            {
                "code": "invalid_webhook_url",
                "title": "Invalid webhook URL",
                "detail": "delivery_config.webhook_url: "
                "webhook_url must be an absolute http:// or https:// URL",
                "source": {"pointer": "/delivery_config/webhook_url"},
            }
        ]
        assert len(built) == 1
        answer = await app.client.post("/api/requests", json=request_payload("plain", NO_DELIVERY))
        assert answer.status_code == 202, answer.text
        async with app.db.transaction() as session:
            stored = (await session.execute(select(Request).where(Request.custom_id == "usual"))).scalar_one()
        if not app.db.is_postgres:  # (jsonb keeps keys in an order of its own)
            # The model first, then the rest as sent: what RequestIn.body_dict gave.
            assert list(stored.body) == ["model", "messages", "n"]
        assert stored.body == usual["body"] and stored.delivery == usual["delivery_config"]
        line = {"custom_id": "usual", "method": "POST", "url": "/v1/chat/completions", "body": stored.body}
        assert stored.body_bytes == len(json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode())
