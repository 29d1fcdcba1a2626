"""RequestIn.body_dict, the body as intake stores it and sizes it, is what pydantic's model_dump()
of the body gives: the model first, then every other field as sent, in its order."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.intake.schema import RequestIn

BODIES = [
    {"model": "m"},
    {"messages": [{"role": "user", "content": 'é ☃ "q" \\ \n'}], "model": "m", "temperature": 0.5},
    {"model": "m", "n": None, "stop": ["a"], "tools": [{"type": "function", "x": {"y": [1, 2.5, True]}}]},
    {"input": "text", "dimensions": 3, "model": "an/embedding:model"},
]


@pytest.mark.parametrize("body", BODIES)
def test_body_dict_is_model_dump(body: dict[str, Any]) -> None:
    request = RequestIn.model_validate(
        {"custom_id": "c", "url": "/v1/chat/completions", "body": body, "delivery_config": {"type": "none"}}
    )
    dumped = request.body.model_dump()
    assert request.body_dict == dumped
    assert list(request.body_dict) == list(dumped)
    assert next(iter(request.body_dict)) == "model"
