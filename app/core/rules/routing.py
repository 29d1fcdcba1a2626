"""Where a request runs: its backend, chosen by model, and how long its batch may gather."""

from __future__ import annotations

from fnmatch import fnmatchcase

from app.ground.config import Settings, parse_routes


def backend_for(settings: Settings, model: str) -> str:
    """The backend a request for `model` runs on: the first matching route, else the default."""
    for pattern, backend in parse_routes(settings.backend_routes):
        if fnmatchcase(model, pattern):
            return backend
    return settings.default_backend


def max_age_seconds(settings: Settings, backend: str) -> float:
    """How long the oldest pending request of a backend may wait before its batch closes."""
    if backend == "openai":
        return settings.openai_batch_max_age_seconds
    return settings.local_batch_max_age_seconds
