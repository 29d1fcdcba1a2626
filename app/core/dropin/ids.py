"""The public id each face shows for a batch: OpenAI's `batch_<n>`, Anthropic's `msgbatch_<n>`,
and the plain number of the native API."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.dropin.create import ANTHROPIC_ORIGIN, OPENAI_ORIGIN
from app.db.models import Batch

PREFIX = {OPENAI_ORIGIN: "batch_", ANTHROPIC_ORIGIN: "msgbatch_"}


def public_batch_id(origin: str, batch_id: int) -> str:
    """How the face that created the batch names it."""
    return f"{PREFIX.get(origin, '')}{batch_id}"


@dataclass(frozen=True, slots=True)
class Face:
    """What a user of the face that created a batch knows it by, and where its results are read:
    OpenAI's input, output and error file ids, or Anthropic's results path (under the mount, e.g.
    /v1). Results of a drop-in batch are pulled through its face, never delivered."""

    name: str
    public_id: str
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    results_path: str | None = None


def face_of(batch: Batch) -> Face | None:
    """The face of a drop-in batch; None for a batch of the native API."""
    public_id = public_batch_id(batch.origin, batch.id)
    if batch.origin == OPENAI_ORIGIN:
        files = (batch.dropin_input_file_id, batch.dropin_output_file_id, batch.dropin_error_file_id)
        return Face("OpenAI", public_id, *files)
    if batch.origin == ANTHROPIC_ORIGIN:
        return Face("Anthropic", public_id, results_path=f"/messages/batches/{public_id}/results")
    return None
