"""The credentials gate: a 401/403 from OpenAI stops submitting and polling in this process until
a probe shows the key works again."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from app.backends.base import BatchAPI, BatchAPIError
from app.ground.clock import utcnow

log = logging.getLogger(__name__)


@dataclass
class AuthGate:
    """Shut while OpenAI refuses our key; `reason` says why (shown by /health and the UI)."""

    reason: str | None = None
    since: datetime | None = None
    recheck_at: float = 0.0

    def close(self, error: BatchAPIError, recheck_seconds: float) -> None:
        """Shut the gate after a refusal; the key is probed again after `recheck_seconds`."""
        if self.reason is None:
            log.error("OpenAI refused our credentials; submission stops: %s", error.message)
            self.since = utcnow()
        self.reason = f"OpenAI refused the API key ({error.status}): {error.message}"
        self.recheck_at = time.monotonic() + recheck_seconds

    async def passes(self, backend: BatchAPI, recheck_seconds: float) -> bool:
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
        log.info("OpenAI accepts our key again; submission resumes")
        # Reopened in place: the scheduler reads `reason` from this same object.
        self.reason, self.since, self.recheck_at = None, None, 0.0
        return True

    def stopped(self) -> str:
        """The wait reason of every ready batch while nothing may be submitted."""
        return f"submission stopped for all batches: {self.reason or 'OPENAI_API_KEY is not set'}"
