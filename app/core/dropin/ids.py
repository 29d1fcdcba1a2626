"""The public id each face shows for a batch: OpenAI's `batch_<n>`, Anthropic's `msgbatch_<n>`,
and the plain number of the native API."""

from __future__ import annotations

from app.core.dropin.create import ANTHROPIC_ORIGIN, OPENAI_ORIGIN

PREFIX = {OPENAI_ORIGIN: "batch_", ANTHROPIC_ORIGIN: "msgbatch_"}


def public_batch_id(origin: str, batch_id: int) -> str:
    """How the face that created the batch names it."""
    return f"{PREFIX.get(origin, '')}{batch_id}"
