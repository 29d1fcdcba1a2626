""".env.example lists every setting with its default: a new variable cannot be left out of it."""

from __future__ import annotations

import re
from pathlib import Path

from app.ground.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_every_setting_is_in_env_example() -> None:
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    settings = {name.upper() for name in Settings.model_fields}
    assert sorted(settings - listed) == []
