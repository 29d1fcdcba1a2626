"""The shorthand backends (LOCAL_*, OPENAI_*) are built once per set of values: intake reads
them several times a request, and building them each time was 15% of its CPU time."""

from __future__ import annotations

from testkit import fast_settings

DB = "sqlite+aiosqlite:///:memory:"


def test_the_backends_are_built_once_and_follow_a_changed_setting() -> None:
    settings = fast_settings(DB, local_base_url="http://127.0.0.1:9001/v1")
    first = settings.backends
    assert settings.backends is first  # not built again
    assert fast_settings(DB, local_base_url="http://127.0.0.1:9001/v1").backends is first
    settings.local_base_url = "http://127.0.0.1:9002/v1"
    assert settings.backends[0].base_url == "http://127.0.0.1:9002/v1"
