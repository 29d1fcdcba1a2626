"""Values encrypted at rest with SECRETS_KEY: webhook header values and destination signing secrets.

A sealed value is PREFIX followed by a Fernet token (AES-128-CBC and HMAC-SHA256, from the
`cryptography` package), so a stored value says by itself whether it is sealed: rows written
before a key was set, or while none is, stay plain and keep working. SECRETS_KEY may list several
keys, comma-separated: the first seals, every one opens (to change the key, put the new one
first and keep the old one while rows sealed with it may still be sent).

Only the core opens values, when it builds what a channel sends; reads never do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "enc:v1:"
# Opened values by token: destination secrets are opened on every claim, and bulk intake seals
# one config for many requests. Bounded; the values are in this process's memory anyway.
_OPENED_CACHE = 4096


class Unopenable(ValueError):
    """A sealed value that no configured key opens (SECRETS_KEY missing, or not the key it was
    sealed with). The message never quotes the value."""


def parse_keys(value: str | None) -> tuple[str, ...]:
    """SECRETS_KEY as its Fernet keys (first seals, all open); ValueError naming no key."""
    if value is None or not value.strip():
        return ()
    keys = tuple(part.strip() for part in value.split(",") if part.strip())
    if not keys:
        raise ValueError(
            "SECRETS_KEY holds no key: give one (or several, comma-separated), or leave it empty"
        )
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ValueError(
                f"key {position} is not a Fernet key (32 bytes as url-safe base64, e.g. from "
                '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`)'
            ) from None
    return keys


class Sealer:
    """Seals and opens values with the keys of SECRETS_KEY; with none, seals nothing."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys]) if keys else None
        self._opened: Callable[[str], str] = lru_cache(maxsize=_OPENED_CACHE)(self._open_token)

    @property
    def active(self) -> bool:
        """Whether values are sealed when stored."""
        return self._fernet is not None

    def seal(self, value: str) -> str:
        if self._fernet is None:
            return value
        return PREFIX + self._fernet.encrypt(value.encode()).decode("ascii")

    def open(self, value: str) -> str:
        """The plain value: a sealed one opened (Unopenable when no key opens it), any other as it is."""
        if not is_sealed(value):
            return value
        return self._opened(value)

    def _open_token(self, value: str) -> str:
        if self._fernet is None:
            raise Unopenable("a value is encrypted at rest and SECRETS_KEY is not set")
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise Unopenable("a value is encrypted at rest with a key SECRETS_KEY does not hold") from None

    def seal_headers(self, config: Any) -> Any:
        """A delivery config as stored: its webhook header values sealed (unless sealed already)."""
        return _with_headers(config, lambda value: value if is_sealed(value) else self.seal(value))

    def open_headers(self, config: Any) -> Any:
        """A delivery config as sent: its webhook header values opened; one no key opens stays
        sealed (the webhook channel refuses to send it, see still_sealed)."""
        return _with_headers(config, self._open_or_keep)

    def _open_or_keep(self, value: str) -> str:
        try:
            return self.open(value)
        except Unopenable:
            return value


@lru_cache(maxsize=8)
def sealer(secrets_key: str | None) -> Sealer:
    """The sealer of a SECRETS_KEY value (one per distinct value, so its cache is shared)."""
    return Sealer(parse_keys(secrets_key))


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def still_sealed(config: Any) -> bool:
    """Whether a delivery config about to be sent holds a header value that could not be opened."""
    headers = config.get("headers") if isinstance(config, dict) else None
    return isinstance(headers, dict) and any(is_sealed(value) for value in headers.values())


def _with_headers(config: Any, change: Callable[[str], str]) -> Any:
    if isinstance(config, list):  # a fan-out: each destination's headers
        return [_with_headers(entry, change) for entry in config]
    headers = config.get("headers") if isinstance(config, dict) else None
    if not isinstance(headers, dict) or not headers:
        return config
    changed = {name: change(value) if isinstance(value, str) else value for name, value in headers.items()}
    return {**config, "headers": changed}
