"""app.ground.jsontext: compact JSON that round-trips, including what msgspec refuses."""

from __future__ import annotations

import json
import math

import pytest

from app.ground import jsontext


def test_compact_json_keeps_order_and_characters() -> None:
    value = {"b": 1, "a": [1.5, None, True], "text": "héllo ☃", "big": 2**70}
    text = jsontext.dumps(value)
    assert text == '{"b":1,"a":[1.5,null,true],"text":"héllo ☃","big":1180591620717411303424}'
    assert json.loads(text) == value


def test_a_lone_surrogate_is_escaped_not_refused() -> None:
    text = jsontext.dumps({"bad": "a\ud800b"})
    assert text == '{"bad":"a\\ud800b"}'
    assert json.loads(text) == {"bad": "a\ud800b"}


def test_loads_reads_what_json_loads_reads() -> None:
    assert jsontext.loads(b'{"a":[1,2.5,null,"\\u0000","\\u00e9"]}') == {"a": [1, 2.5, None, "\x00", "é"]}
    # msgspec refuses these; the standard library's answer is kept.
    assert jsontext.loads('{"lone":"\\ud800"}') == {"lone": "\ud800"}
    assert math.isnan(jsontext.loads('{"n":NaN}')["n"])
    with pytest.raises(ValueError):
        jsontext.loads("not json")
