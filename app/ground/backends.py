"""Named backends: what each backend is (its kind, where it is, which models it serves, its
own limits), read from BACKENDS_FILE (TOML) or, without one, from the one-backend shorthand
variables (LOCAL_BASE_URL, OPENAI_API_KEY, BACKEND_ROUTES, DEFAULT_BACKEND).

The specs are plain data: core routes by them (app.core.rules.routing) and the app factory
builds one adapter per spec (app.asgi). A file that cannot be used stops the start with the
file, the line and the reason, rather than leaving requests for a backend nobody can run.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Kind = Literal["openai-compatible", "openai-batch", "anthropic-batch"]
# Kinds that run whole batches remotely (submitted, polled, collected), not line by line.
BATCH_KINDS: frozenset[str] = frozenset({"openai-batch", "anthropic-batch"})
DEFAULT_BASE_URLS = {
    "openai-batch": "https://api.openai.com/v1",
    "anthropic-batch": "https://api.anthropic.com",
}
# A name is used in URLs, metrics labels and the requests table: keep it plain.
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class BackendsFileError(ValueError):
    """BACKENDS_FILE cannot be used: says the file, the line and why."""


class BackendSpec(BaseModel):
    """One backend: a name requests are routed to, its kind and its own limits. A limit left
    unset falls back to the global setting of the same meaning."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: Kind
    # None for openai-compatible: the embedded model Batchgate runs itself.
    base_url: str | None = None
    # The environment variable holding the key (keys never live in the file).
    api_key_env: str | None = None
    api_key: str | None = Field(None, repr=False, exclude=True)
    # Glob patterns of the model names this backend serves, tried in file order.
    models: tuple[str, ...] = Field(min_length=1)
    concurrency: int | Literal["auto"] | None = None
    timeout_seconds: float | None = Field(None, gt=0)
    batch_max_requests: int | None = Field(None, ge=1)
    batch_max_bytes: int | None = Field(None, ge=1)
    batch_max_age_seconds: float | None = Field(None, ge=0)
    poll_seconds: float | None = Field(None, gt=0)
    # Backends to try, in order, for a request whose complete_by this one cannot make.
    fallback: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("a backend name is 1-63 lower-case letters, digits, '-' or '_'")
        return value

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= 1024:
            raise ValueError("concurrency is 'auto' or a number from 1 to 1024")
        return value

    @property
    def runs_batches(self) -> bool:
        """Whether this backend takes whole batches (a batch API) rather than lines."""
        return self.kind in BATCH_KINDS

    @property
    def target(self) -> str:
        """Where it points, for status pages: its base URL, its kind's default, or the embedded model."""
        return self.base_url or DEFAULT_BASE_URLS.get(self.kind, "embedded")


def load_file(path: str, environ: dict[str, str] | None = None) -> tuple[BackendSpec, ...]:
    """The backends a TOML file names, in file order; BackendsFileError naming the line."""
    environ = dict(os.environ) if environ is None else environ
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BackendsFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BackendsFileError(f"{path}: {exc}") from exc
    unknown = sorted(set(document) - {"backends"})
    if unknown or not isinstance(document.get("backends"), dict) or not document["backends"]:
        where = f" (unknown table {unknown[0]!r})" if unknown else ""
        raise BackendsFileError(f"{path}: write one [backends.NAME] table per backend{where}")
    specs = []
    for name, table in document["backends"].items():
        line = _line_of(text, name)
        if not isinstance(table, dict):
            raise BackendsFileError(f"{path}:{line}: backends.{name} must be a table")
        specs.append(_spec(path, line, name, table, environ))
    names = {spec.name for spec in specs}
    for spec in specs:
        if unknown := [name for name in spec.fallback if name not in names or name == spec.name]:
            where = f"{path}:{_line_of(text, spec.name)}: [backends.{spec.name}] fallback"
            raise BackendsFileError(f"{where}: {unknown[0]!r} is not another backend of this file")
    return tuple(specs)


def _spec(path: str, line: int, name: str, table: dict[str, object], environ: dict[str, str]) -> BackendSpec:
    where = f"{path}:{line}: [backends.{name}]"
    if "api_key" in table:
        raise BackendsFileError(f"{where} api_key: keys never live in the file; set api_key_env")
    try:
        spec = BackendSpec.model_validate({**table, "name": name})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise BackendsFileError(f"{where} {field}: {first['msg']}") from exc
    if spec.kind == "openai-compatible" and spec.base_url is None:
        raise BackendsFileError(f"{where} base_url: an openai-compatible backend needs its server's URL")
    if spec.kind != "openai-compatible" and spec.concurrency is not None:
        raise BackendsFileError(f"{where} concurrency: only openai-compatible backends run lines")
    if spec.api_key_env is None:
        return spec
    key = environ.get(spec.api_key_env) or None
    if key is None:
        raise BackendsFileError(f"{where} api_key_env: {spec.api_key_env} is not set in the environment")
    return spec.model_copy(update={"api_key": key})


def _line_of(text: str, name: str) -> int:
    """The line of a backend's table header (1-based; 1 when it cannot be found)."""
    header = re.compile(rf"^[ \t]*\[\s*backends\s*\.\s*[\"']?{re.escape(name)}[\"']?\s*\]", re.MULTILINE)
    match = header.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else 1


@functools.lru_cache(maxsize=16)
def shorthand(
    local_base_url: str | None,
    local_api_key: str | None,
    local_concurrency: Any,
    local_timeout_seconds: float,
    openai_base_url: str,
    openai_api_key: str | None,
    openai_timeout_seconds: float,
    openai_poll_seconds: float,
) -> tuple[BackendSpec, BackendSpec]:
    """The backends LOCAL_* and OPENAI_* name ("local", "openai"), built once per set of values."""
    local = BackendSpec(
        name="local",
        kind="openai-compatible",
        base_url=local_base_url,
        api_key=local_api_key,
        models=("*",),
        concurrency=local_concurrency,
        timeout_seconds=local_timeout_seconds,
    )
    openai = BackendSpec(
        name="openai",
        kind="openai-batch",
        base_url=openai_base_url,
        api_key=openai_api_key,
        models=("*",),
        timeout_seconds=openai_timeout_seconds,
        poll_seconds=openai_poll_seconds,
    )
    return (local, openai)
