"""app.core.runs.openai.outcomes: an output file's lines read into what their requests store. The
usual line (2xx, no error) keeps its response as the text it came in; whatever path a line
takes, what is stored means the same as decoding the whole line and classifying it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.core.runs.openai import outcomes
from app.core.runs.openai.answers import classify
from app.ground import jsontext

USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
}


def answered(status: int = 200, body: Any = None, error: Any = None, custom_id: Any = "c-1") -> str:
    """A line as OpenAI writes it (json.dumps: a space after each colon and comma)."""
    if body is None:
        body = {"id": "chatcmpl-1", "choices": [{"message": {"content": "hé ☃ \\n"}}], "usage": USAGE}
    response = {"status_code": status, "request_id": "req_1", "body": body}
    return json.dumps({"id": "batch_req_1", "custom_id": custom_id, "response": response, "error": error})


LINES = [
    answered(),
    answered(201, body={"usage": {"input_tokens": 3, "output_tokens": 4}}),
    answered(body={"no": "usage"}),
    answered(body={"usage": [1, 2]}),
    answered(body=[1, 2]),
    answered(400, body={"error": {"message": "bad max_tokens", "code": "invalid_value"}}),
    answered(500, body={"error": {"message": "boom", "type": "server_error"}}),
    answered(error={"code": "content_filter", "message": "no"}),
    answered(error="a string"),
    json.dumps({"custom_id": "c-1", "response": None, "error": {"code": "batch_expired", "message": "late"}}),
    answered(custom_id=7),
    answered(body={"text": "nul \x00 here", "usage": USAGE}),
    answered(body={"text": "lone \ud800", "usage": USAGE}),
    '{"custom_id": "c-1", "response": {"status_code": 200, "body": {"n": NaN}}, "error": null}',
    '{"custom_id": "c-1", "response": {"status_code": 200.0, "body": {}}}',
    '{"custom_id": "c-1", "response": {"status_code": true, "body": {}}}',
    '{"custom_id": "c-1", "response": {"status_code": 200, "body": {"big": 123456789012345678901234567890}}}',
]


def whole(text: str) -> tuple[str, outcomes.Outcome]:
    """The line decoded whole and classified, as collecting read every line before."""
    return outcomes._any_line(text)


def stored(value: Any) -> Any:
    """What a JSON column reads back."""
    return jsontext.loads(value.text) if isinstance(value, jsontext.Encoded) else value


@pytest.mark.parametrize("text", LINES)
def test_every_line_stores_what_decoding_it_whole_stores(text: str) -> None:
    [(custom_id, outcome)] = outcomes.parse([text]).lines.items()
    expected_id, expected = whole(text)
    assert custom_id == expected_id
    assert (outcome.kind, outcome.error, outcome.tokens, outcome.usage, outcome.status) == (
        expected.kind,
        expected.error,
        expected.tokens,
        expected.usage,
        expected.status,
    )
    assert json.dumps(stored(outcome.response)) == json.dumps(stored(expected.response))
    assert (outcome.kind, outcome.error) == classify(jsontext.loads(text))


def test_an_answered_line_keeps_its_response_text_as_it_came() -> None:
    text = answered()
    outcome = outcomes.parse([text]).lines["c-1"]
    assert isinstance(outcome.response, jsontext.Encoded)
    response = json.loads(text)["response"]
    assert outcome.response.text == json.dumps(response)  # OpenAI's spacing, not re-encoded
    assert outcome.kind == "ok" and outcome.error is None and outcome.status == "succeeded"
    assert outcome.tokens == {
        "input_tokens": 12,
        "cached_tokens": 4,
        "output_tokens": 5,
        "reasoning_tokens": 2,
    }
    assert outcome.usage == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


@pytest.mark.parametrize(
    "text",
    [
        answered(body={"text": "nul \x00 here"}),  # made storable: decoded whole
        answered(400, body={"error": {"message": "no"}}),
        answered(error={"code": "server_error"}),
        '{"custom_id": "c-1", "response": {"status_code": 200, "body": {"n": NaN}}}',
    ],
)
def test_other_lines_are_decoded_whole(text: str) -> None:
    outcome = outcomes.parse([text]).lines["c-1"]
    assert not isinstance(outcome.response, jsontext.Encoded)


def test_malformed_lines_are_counted_not_kept() -> None:
    chunk = outcomes.parse([answered(), '{"custom_id": "c-2", "response"', '{"response": null}', "[1]", "3"])
    assert list(chunk.lines) == ["c-1"] and chunk.malformed == 4
