"""What the database is given: NUL characters and lone surrogates replaced, anywhere in a value."""

from __future__ import annotations

from app.core.rules.storable import REPLACEMENT, json_value


def test_unstorable_strings_are_replaced_at_any_depth() -> None:
    value = {"a\x00": ["x\x00y", {"deep": "\ud800 alone"}], "n": [1, 2.5, None, True]}
    assert json_value(value) == {
        f"a{REPLACEMENT}": [f"x{REPLACEMENT}y", {"deep": "? alone"}],
        "n": [1, 2.5, None, True],
    }


def test_storable_values_pass_as_they_are() -> None:
    value = {"text": "é 😀", "list": [1, {"k": None}]}
    assert json_value(value) is value  # not walked: nothing in it needs replacing
    assert json_value(None) is None
    written_out = {"text": "a \\u0000 written out is six characters"}
    assert json_value(written_out) == written_out
