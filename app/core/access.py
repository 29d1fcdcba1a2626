"""Who may call the API: the keys in API_KEYS, held only as SHA-256 digests and compared in
constant time. The HTTP faces read the key a request carries and ask `ApiKeys.check`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Refusal(StrEnum):
    """Why a request was refused; the faces word it in their own error shape."""

    MISSING = "missing"
    WRONG = "wrong"


def parse_keys(configured: str | None) -> tuple[str, ...]:
    """`key1,key2` as its keys, spaces around each dropped; ValueError if set but holding none.

    A value like "," is refused rather than read as "no keys": it would leave the API open to
    an operator who meant to close it.
    """
    if configured is None or not configured.strip():
        return ()
    keys = tuple(key for key in (part.strip() for part in configured.split(",")) if key)
    if not keys:
        raise ValueError("API_KEYS holds no key: give comma-separated keys, or leave it empty")
    return keys


def _digest(key: str) -> bytes:
    # Digests have one length, so comparing them says nothing about a key's length.
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys as digests; no keys means the API is open."""

    digests: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, configured: str | None) -> ApiKeys:
        return cls(tuple(_digest(key) for key in parse_keys(configured)))

    @property
    def required(self) -> bool:
        return bool(self.digests)

    def accepts(self, presented: str) -> bool:
        """Whether `presented` is one of the keys. Every key is compared, so the time taken does
        not tell which one matched or how much of one."""
        digest = _digest(presented)
        matched = False
        for known in self.digests:
            matched |= hmac.compare_digest(known, digest)
        return matched

    def check(self, presented: Iterable[str]) -> Refusal | None:
        """None when the request may go on: no keys are configured, or one it carries is valid."""
        if not self.required:
            return None
        given = list(presented)
        if not given:
            return Refusal.MISSING
        return None if any(self.accepts(key) for key in given) else Refusal.WRONG
