"""The Anthropic Message Batches lifecycle: build and create the remote batch once (submit.py,
once.py), poll it (poll.py), stream and apply its results (collect.py).

As for OpenAI, each step claims its batches with a lease, talks to the API outside any
transaction and records what it learnt in short ones, so a process can die at any line and the
next claim resumes. Every loop is bounded (endings.py) and ends in a terminal, visible state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from app.backends.base import MessageBatchAPI
from app.core.rules import routing
from app.core.rules.effective import EffectiveSettings
from app.core.runs.anthropic import poll, submit
from app.core.runs.openai.gate import AuthGate
from app.db.session import Database


def _nothing() -> None:
    return None


def _gate() -> AuthGate:
    return AuthGate(label="Anthropic", unset="the backend has no API key")


@dataclass(eq=False)
class AnthropicRunner:
    """Moves one Anthropic backend's batches (Batch.backend == backend.name) through their
    lifecycle; the worker calls `submit` and `poll`."""

    db: Database
    effective: EffectiveSettings
    backend: MessageBatchAPI
    owner: str
    on_results: Callable[[], None] = _nothing
    gate: AuthGate = field(default_factory=_gate)

    @property
    def poll_seconds(self) -> float:
        """How often its batches are polled: its backend's poll_seconds, else ANTHROPIC_POLL_SECONDS."""
        settings = self.effective.current
        return routing.poll_seconds(settings, self.backend.name, settings.anthropic_poll_seconds)

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def recheck_seconds(self) -> float:
        return self.effective.current.anthropic_auth_recheck_seconds

    async def submit(self) -> bool:
        """Create the remote batches of this backend's ready batches; True when any was claimed."""
        return await submit.submit_ready(self)

    async def poll(self) -> bool:
        """Poll the due remote batches, send operators' cancels, collect the ended ones; True
        when there may be more due than one round took."""
        return await poll.poll_due(self)
