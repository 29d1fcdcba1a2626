"""Which backends run batches remotely through a batch API (OpenAI's Batches, Anthropic's Message
Batches): a processing batch of theirs is cancelled by asking the remote side (status
`cancelling`, sent by the runner's poll), not by ending its requests here.

"openai" and "anthropic" (the default names) are remote from the start; the app factory
registers every other backend of kind openai-batch or anthropic-batch by its name when it builds
it, in every role, so that an API process cancels the same way a worker does.
"""

from __future__ import annotations

_REMOTE: set[str] = {"openai", "anthropic"}


def register(name: str) -> None:
    """Say that the backend `name` runs its batches through a remote batch API."""
    _REMOTE.add(name)


def is_remote(backend: str) -> bool:
    """Whether a batch of `backend` runs remotely (its cancel goes to the remote API)."""
    return backend in _REMOTE
