"""Which backends run batches remotely through a batch API, and of which kind: "openai-batch"
(OpenAI's Files + Batches) or "anthropic-batch" (Anthropic's Message Batches). A processing batch
of theirs is cancelled by asking the remote side (status `cancelling`, sent by the runner's
poll), not by ending its requests here; its cost is priced from its kind's table.

"openai" and "anthropic" (the default names) are known from the start; the app factory
registers every other backend of a batch kind by its name when it builds it, in every role, so
that an API process cancels and prices the same way a worker does.
"""

from __future__ import annotations

from typing import Literal

RemoteKind = Literal["openai-batch", "anthropic-batch"]

_REMOTE: dict[str, RemoteKind] = {"openai": "openai-batch", "anthropic": "anthropic-batch"}


def register(name: str, kind: RemoteKind) -> None:
    """Say that the backend `name` runs its batches through a remote batch API of `kind`."""
    _REMOTE[name] = kind


def kind_of(backend: str) -> RemoteKind | None:
    """The remote kind of `backend`, or None when its batches run here (a line runner)."""
    return _REMOTE.get(backend)


def is_remote(backend: str) -> bool:
    """Whether a batch of `backend` runs remotely (its cancel goes to the remote API)."""
    return backend in _REMOTE
