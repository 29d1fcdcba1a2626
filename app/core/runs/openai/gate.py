"""The credentials gate: a 401/403 from a batch API (OpenAI's, Anthropic's) stops submitting and
polling of that backend in this process until a probe shows the key works again."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.backends.base import BackendStatus, BatchAPIError
from app.ground.clock import utcnow

log = logging.getLogger(__name__)


class Probed(Protocol):
    """What the gate needs of a backend: whether it has a key, and a cheap probe."""

    configured: bool

    async def probe(self) -> BackendStatus: ...


@dataclass
class AuthGate:
    """Shut while the API refuses our key; `reason` says why (shown by /health and the UI).
    `label` names the API in the reasons."""

    label: str = "OpenAI"
    unset: str = "OPENAI_API_KEY is not set"
    reason: str | None = None
    since: datetime | None = None
    recheck_at: float = 0.0

    def close(self, error: BatchAPIError, recheck_seconds: float) -> None:
        """Shut the gate after a refusal; the key is probed again after `recheck_seconds`."""
        if self.reason is None:
            log.error("%s refused our credentials; submission stops: %s", self.label, error.message)
            self.since = utcnow()
        self.reason = f"{self.label} refused the API key ({error.status}): {error.message}"
        self.recheck_at = time.monotonic() + recheck_seconds

    async def passes(self, backend: Probed, recheck_seconds: float) -> bool:
        """True when calls may go out; while the gate is shut, re-probe the key now and then."""
        if not backend.configured:
            return False
        if self.reason is None:
            return True
        if time.monotonic() < self.recheck_at:
            return False
        status = await backend.probe()
        if not status.reachable:
            self.recheck_at = time.monotonic() + recheck_seconds
            return False
        log.info("%s accepts our key again; submission resumes", self.label)
        # Reopened in place: the scheduler reads `reason` from this same object.
        self.reason, self.since, self.recheck_at = None, None, 0.0
        return True

    def stopped(self) -> str:
        """The wait reason of every ready batch while nothing may be submitted."""
        return f"submission stopped for all batches: {self.reason or self.unset}"
