"""A backends file that cannot be used stops the start with the file, the line and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.rules import routing
from app.ground.backends import BackendsFileError, load_file
from testkit import fast_settings

GOOD = """
[backends.ollama]
kind = "openai-compatible"
base_url = "http://10.0.0.5:11434/v1"
models = ["llama3*", "qwen*"]
concurrency = 8

[backends.openai]
kind = "openai-batch"
api_key_env = "TEST_OPENAI_KEY"
models = ["gpt-*", "o*"]
poll_seconds = 30
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "backends.toml"
    path.write_text(text)
    return str(path)


def test_a_good_file_names_its_backends_in_order(tmp_path: Path) -> None:
    specs = load_file(write(tmp_path, GOOD), {"TEST_OPENAI_KEY": "sk-test"})
    assert [(s.name, s.kind) for s in specs] == [("ollama", "openai-compatible"), ("openai", "openai-batch")]
    assert specs[1].api_key == "sk-test" and "sk-test" not in repr(specs[1])
    assert specs[1].target == "https://api.openai.com/v1" and specs[0].concurrency == 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[backends.a\nkind = 1", "at line 1"),  # not TOML: tomllib says the line and column
        (GOOD.replace('kind = "openai-batch"', 'kind = "openai-sync"'), ":8: [backends.openai] kind"),
        (GOOD.replace('base_url = "http://10.0.0.5:11434/v1"\n', ""), ":2: [backends.ollama] base_url"),
        (GOOD.replace('models = ["gpt-*", "o*"]', "models = []"), ":8: [backends.openai] models"),
        (GOOD.replace("concurrency = 8", "concurrency = 0"), ":2: [backends.ollama] concurrency"),
        (GOOD.replace("poll_seconds = 30", "pol_seconds = 30"), ":8: [backends.openai] pol_seconds"),
        (GOOD.replace('api_key_env = "TEST_OPENAI_KEY"', 'api_key = "sk-x"'), "keys never live in the file"),
        (GOOD.replace("[backends.ollama]", "[backends.Ollama]"), ":2: [backends.Ollama] name"),
        ("[other]\nx = 1\n", "unknown table 'other'"),
        (GOOD.replace("poll_seconds = 30", 'fallback = ["nope"]'), ":8: [backends.openai] fallback: 'nope'"),
    ],
)
def test_a_bad_file_says_where_and_why(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(BackendsFileError) as raised:
        load_file(path, {"TEST_OPENAI_KEY": "sk-test"})
    assert str(raised.value).startswith(path) and expected in str(raised.value)


def test_a_key_variable_that_is_not_set_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="TEST_OPENAI_KEY is not set"):
        fast_settings("sqlite+aiosqlite://", backends_file=write(tmp_path, GOOD))


def test_routing_follows_the_file_order_and_the_shorthand_keeps_its_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-test")
    settings = fast_settings("sqlite+aiosqlite://", backends_file=write(tmp_path, GOOD))
    assert routing.backend_for(settings, "qwen2.5") == "ollama"
    assert routing.backend_for(settings, "gpt-4o-mini") == "openai"
    assert routing.backend_for(settings, "mistral") is None
    assert routing.max_age_seconds(settings, "ollama") == settings.local_batch_max_age_seconds
    assert routing.max_age_seconds(settings, "openai") == settings.openai_batch_max_age_seconds

    shorthand = fast_settings("sqlite+aiosqlite://", backend_routes="gpt-*=openai")
    assert routing.backend_for(shorthand, "gpt-4o") == "openai"
    assert routing.backend_for(shorthand, "mistral") == "local"
    # Messages requests cannot run on OpenAI's batch API: they fall to a server that can.
    assert routing.messages_backend(shorthand, "gpt-4o") == "local"
