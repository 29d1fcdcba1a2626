"""Where a request runs: its backend, chosen by model (or named by the request), and the
limits its batch gathers under.

With BACKENDS_FILE a request goes to the first backend whose model patterns match; with the
shorthand, to the first BACKEND_ROUTES pattern that matches, else DEFAULT_BACKEND. A request no
backend serves is refused at intake, naming what is served, so nothing waits for a backend that
does not exist.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import get_args

from app.core.rules.errors import InvalidInput, Problem
from app.ground.backends import BackendSpec, Kind
from app.ground.clock import utcnow
from app.ground.config import Settings, parse_routes

ALL_KINDS: frozenset[str] = frozenset(get_args(Kind))
# The window a batch API promises its results within (OpenAI's completion_window, Anthropic's 24 h).
BATCH_WINDOW = timedelta(hours=24)
# What can run an Anthropic Messages request: a server it is translated for, or Anthropic itself.
MESSAGES_KINDS: frozenset[str] = frozenset({"openai-compatible", "anthropic-batch"})


def backend_for(settings: Settings, model: str, kinds: frozenset[str] = ALL_KINDS) -> str | None:
    """The backend a request for `model` runs on (of these `kinds`: what can run its format),
    or None when no backend serves it."""
    if settings.backends_file is None:
        shorthand = [*parse_routes(settings.backend_routes), ("*", settings.default_backend)]
        shorthand += [("*", spec.name) for spec in settings.backends]
        candidates = [(pattern, name) for pattern, name in shorthand if _kind(settings, name) in kinds]
    else:
        candidates = [(p, spec.name) for spec in settings.backends if spec.kind in kinds for p in spec.models]
    return next((name for pattern, name in candidates if fnmatchcase(model, pattern)), None)


def _kind(settings: Settings, backend: str) -> str | None:
    spec = spec_of(settings, backend)
    return spec.kind if spec else None


def messages_backend(settings: Settings, model: str) -> str:
    """The backend an Anthropic Messages batch for `model` runs on: the first that serves it and
    can run the format (an inference server, translated; or Anthropic); InvalidInput otherwise."""
    backend = backend_for(settings, model, MESSAGES_KINDS)
    if backend is None:
        served = [spec for spec in settings.backends if spec.kind in MESSAGES_KINDS]
        raise InvalidInput(
            Problem(
                "no_backend",
                "No backend serves this model",
                f"No backend that runs Messages requests serves model {model!r}; served: "
                + ("; ".join(f"{s.name}: {', '.join(s.models)}" for s in served) or "none"),
                "requests",
            )
        )
    return backend


def spec_of(settings: Settings, backend: str) -> BackendSpec | None:
    """The named backend's spec, or None when no backend has that name."""
    return next((spec for spec in settings.backends if spec.name == backend), None)


def runs_batches(settings: Settings, backend: str) -> bool:
    """Whether `backend` is a batch API (batches are submitted, polled and cancelled remotely)."""
    spec = spec_of(settings, backend)
    return spec is not None and spec.runs_batches


def poll_seconds(settings: Settings, backend: str, fallback: float) -> float:
    """How often a batch API backend's batches are polled: its own poll_seconds, else `fallback`
    (its kind's global setting)."""
    spec = spec_of(settings, backend)
    return (spec.poll_seconds if spec else None) or fallback


def place(
    settings: Settings, model: str, chosen: str | None, complete_by: datetime | None, pointer: str
) -> str | Problem:
    """The backend a request runs on, or why it cannot run here. With a `complete_by`, a
    backend must be able to make it: a batch API promises results only within BATCH_WINDOW, so
    a routed request whose backend cannot goes to the first of its fallbacks that serves the
    model and can; a request that names its backend gets that one or a refusal."""
    if complete_by is None and (known := _placed.get(settings, model, chosen)) is not None:
        return known
    if problem := refusal(settings, model, chosen, pointer):
        return problem
    backend = chosen or backend_for(settings, model)
    assert backend is not None  # refusal() said one serves it
    if complete_by is None:
        _placed.keep(model, chosen, backend)
        return backend
    now = utcnow()
    spec = spec_of(settings, backend)
    fallbacks = [] if chosen or spec is None else list(spec.fallback)
    usable = usable_backends(settings)
    for name in [backend, *fallbacks]:
        candidate = spec_of(settings, name)
        if candidate is None or name not in usable or not serves(candidate, model):
            continue
        if now + window(candidate) <= complete_by:
            return name
    why = "has passed" if complete_by <= now else f"is sooner than {backend!r} promises results"
    tried = f" (nor can its fallbacks: {', '.join(fallbacks)})" if fallbacks else ""
    return Problem(
        "deadline_unreachable",
        "Deadline cannot be met",
        f"complete_by {complete_by.isoformat()} {why}{tried}; a batch API promises results within "
        f"{BATCH_WINDOW.total_seconds() / 3600:g} hours.",
        pointer + "/complete_by",
    )


class _Placements:
    """Where requests without a deadline went, by (model, chosen backend), for the routing
    settings of the last call: routing a request again was 5% of intake's CPU time. What place()
    answers depends only on the backends (the same tuple object while their settings are the
    same, app.ground.config) and the routing variables; the cache starts over when they change."""

    MAX = 1024  # models are the clients' text: a flood of new ones restarts the cache

    def __init__(self) -> None:
        self.backends: tuple[BackendSpec, ...] = ()
        self.rules: tuple[str, str, object] = ("", "", None)
        self.found: dict[tuple[str, str | None], str] = {}

    def get(self, settings: Settings, model: str, chosen: str | None) -> str | None:
        backends = settings.backends
        rules = (settings.backend_routes, settings.default_backend, settings.backends_file)
        if backends is not self.backends or rules != self.rules:
            self.backends, self.rules, self.found = backends, rules, {}
            return None
        return self.found.get((model, chosen))

    def keep(self, model: str, chosen: str | None, backend: str) -> None:
        if len(self.found) >= self.MAX:
            self.found = {}
        self.found[(model, chosen)] = backend


_placed = _Placements()


def serves(spec: BackendSpec, model: str) -> bool:
    """Whether `spec`'s model patterns match `model`."""
    return any(fnmatchcase(model, pattern) for pattern in spec.models)


def window(spec: BackendSpec) -> timedelta:
    """How long a batch of this backend may take once submitted, at most: a batch API's
    completion window; an inference server runs it at once."""
    return BATCH_WINDOW if spec.runs_batches else timedelta(0)


def usable_backends(settings: Settings) -> frozenset[str]:
    """The backends a request may run on now (a batch API needs its key)."""
    return frozenset(s.name for s in settings.backends if not (s.runs_batches and s.api_key is None))


def refusal(settings: Settings, model: str, chosen: str | None, pointer: str) -> Problem | None:
    """Why a request for `model` (on backend `chosen`, when it names one) cannot run here, or
    None when it can. `pointer` locates the request in its document."""
    names = ", ".join(spec.name for spec in settings.backends)
    if chosen is not None and spec_of(settings, chosen) is None:
        return Problem(
            "invalid_backend",
            "Unknown backend",
            f"No backend is named {chosen!r}; this gateway runs: {names}.",
            pointer + "/backend",
        )
    backend = chosen or backend_for(settings, model)
    if backend is None:
        served = "; ".join(f"{spec.name}: {', '.join(spec.models)}" for spec in settings.backends)
        return Problem(
            "no_backend",
            "No backend serves this model",
            f"No backend serves model {model!r}. Models served (backend: patterns): {served}.",
            pointer + "/body/model",
        )
    spec = spec_of(settings, backend)
    if spec is not None and spec.runs_batches and spec.api_key is None:
        company = spec.kind.split("-")[0]
        variable = spec.api_key_env or f"{company.upper()}_API_KEY"
        return Problem(
            f"{company}_not_configured",
            f"The {backend} backend is off",
            f"Requests for {model!r} run on {backend!r}, but this gateway has no key for it "
            f"({variable}); name another backend or ask the operator to configure it.",
            pointer + ("/backend" if chosen else "/body/model"),
        )
    return None


def max_age_seconds(settings: Settings, backend: str) -> float:
    """How long the oldest pending request of a backend may wait before its batch closes."""
    spec = spec_of(settings, backend)
    if spec is not None and spec.batch_max_age_seconds is not None:
        return spec.batch_max_age_seconds
    if spec is not None and spec.runs_batches:
        return settings.openai_batch_max_age_seconds
    return settings.local_batch_max_age_seconds


def batch_max_requests(settings: Settings, backend: str) -> int:
    """How many requests one batch of `backend` holds at most (its own limit, else BATCH_MAX_REQUESTS)."""
    spec = spec_of(settings, backend)
    return (spec.batch_max_requests if spec else None) or settings.batch_max_requests


def batch_max_bytes(settings: Settings, backend: str) -> int:
    """How many bytes of JSONL one batch of `backend` holds at most (its own, else BATCH_MAX_BYTES)."""
    spec = spec_of(settings, backend)
    return (spec.batch_max_bytes if spec else None) or settings.batch_max_bytes
