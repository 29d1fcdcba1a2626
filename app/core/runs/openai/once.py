"""Creating a remote batch once: the submission key, the lookup by it, and the create loop.

OpenAI's batch create has no idempotency key, so an answer lost after OpenAI acted (a timeout, a
dropped connection, a 5xx) leaves a batch Batchgate does not know about; sending the create again
would run, and bill, the same lines twice. So every create carries a key in its metadata, stored
in the database before the create is sent, and before any create that may repeat an earlier one
the remote batches are searched for that key: one found is adopted as if the create had answered.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.backends.base import BatchAPI, BatchAPIError
from app.core.runs.openai.common import Run
from app.db.models import Batch
from app.db.session import Database
from app.ground.clock import utcnow
from app.net.outbound import RetryPolicy

log = logging.getLogger(__name__)

# The metadata keys every create carries.
BATCH_ID_KEY = "batchgate_batch_id"
SUBMISSION_KEY = "batchgate_submission_key"
# GET /batches cannot filter by metadata: read this many pages of its newest-first list at most,
PAGE_SIZE = 100
LOOKUP_PAGES = 10
# ... and stop at batches OpenAI created this long before the key was made (its clock and ours
# may disagree; a create is sent after its key is stored).
CLOCK_SLACK = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class SubmissionKey:
    """The key of one submission and when it was stored (the lookup goes back no further)."""

    value: str
    made_at: datetime


def stored_key(batch: Batch) -> SubmissionKey | None:
    """The key of the batch's current submission, if a create may have been sent with it."""
    if batch.submission_key is None or batch.submission_key_at is None:
        return None
    return SubmissionKey(batch.submission_key, batch.submission_key_at)


async def key_for(db: Database, batch: Batch) -> SubmissionKey:
    """The batch's stored key, or a new one stored now (committed before any create is sent)."""
    key = stored_key(batch)
    if key is not None:
        return key
    key = SubmissionKey(uuid.uuid4().hex, utcnow())
    async with db.transaction() as session:
        row = await session.get(Batch, batch.id, with_for_update=True)
        assert row is not None
        row.submission_key, row.submission_key_at = key.value, key.made_at
    return key


def metadata(batch_id: int, key: SubmissionKey) -> dict[str, str]:
    """What the create sends as `metadata`."""
    return {BATCH_ID_KEY: str(batch_id), SUBMISSION_KEY: key.value}


async def find_remote(backend: BatchAPI, key: SubmissionKey) -> dict[str, Any] | None:
    """The remote batch whose metadata carries `key`, or None when none was found within
    LOOKUP_PAGES pages back to the key's time."""
    oldest = (key.made_at - CLOCK_SLACK).timestamp()
    after: str | None = None
    for _ in range(LOOKUP_PAGES):
        page = await backend.list_batches(after=after, limit=PAGE_SIZE)
        data = [remote for remote in page.get("data") or [] if isinstance(remote, dict)]
        for remote in data:
            found = remote.get("metadata")
            if isinstance(found, dict) and found.get(SUBMISSION_KEY) == key.value:
                return remote
            created = remote.get("created_at")
            if isinstance(created, int | float) and created < oldest:
                return None  # the list is newest first: the rest is older still
        if not page.get("has_more") or not data:
            return None
        after = str(page.get("last_id") or data[-1]["id"])
    log.warning(
        "no OpenAI batch has submission key %s among the newest %d", key.value, PAGE_SIZE * LOOKUP_PAGES
    )
    return None


async def create_or_adopt(
    run: Run, batch_id: int, key: SubmissionKey, file_id: str, endpoint: str
) -> tuple[dict[str, Any], bool]:
    """Create the remote batch, or adopt the one a create whose answer was lost made; returns
    the batch object and whether it was adopted.

    The create is retried here, not by the adapter: after an answer that says nothing was done
    (a refused connection, 408, 429) it is sent again; after a lost answer, only when a lookup by
    the key finds no batch. OPENAI_MAX_RETRIES bounds the retries, as for every other call.
    """
    settings = run.effective.current
    policy = RetryPolicy(settings.openai_max_retries, settings.openai_retry_backoff_seconds)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await run.backend.create_batch(file_id, endpoint, metadata(batch_id, key)), False
        except BatchAPIError as exc:
            if not (exc.retryable and policy.allows(attempt)):
                raise
            error = exc
        # Wait first: a batch just created may take a moment to show in the list.
        await asyncio.sleep(policy.wait(attempt, error.retry_after))
        if error.outcome_unknown and (remote := await find_remote(run.backend, key)) is not None:
            return remote, True
