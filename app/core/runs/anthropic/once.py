"""Creating a remote batch once, on an API without metadata or idempotency keys.

Anthropic's create takes only the request list, so a lost answer (a timeout, a dropped
connection, a 5xx) leaves a batch Batchgate cannot name. Before any create that may repeat an
earlier one, the newest batches are listed and a candidate is adopted when all of these hold:
- it was created after the submission key was stored (less a clock slack): a create is only
  ever sent after its key is committed;
- its request_counts add up to exactly the number of requests this submission sent;
- no batch row of this backend already follows it (another batch's create cannot be taken).
The list shows no custom_ids, so this is a strong heuristic, not a proof; the proof comes with
the results, whose custom_ids carry the submission key (body.py): results of a wrongly adopted
batch match none of this batch's requests, which then fail with `no_result` rather than take
another batch's answers. Of several candidates the oldest is taken (the create went out right
after the key was stored). A create whose answer said nothing was done (a refused connection,
429) is sent again without looking.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import select

from app.backends.base import BatchAPIError, MessageBatchAPI
from app.core.runs.openai.once import SubmissionKey
from app.db.models import Batch
from app.db.session import Database

if TYPE_CHECKING:
    from app.core.runs.anthropic.runner import AnthropicRunner

log = logging.getLogger(__name__)
PAGE_SIZE = 100
LOOKUP_PAGES = 10
CLOCK_SLACK = timedelta(minutes=10)


def total(remote: dict[str, Any]) -> int:
    """How many requests a remote batch holds, from its request_counts."""
    counts = remote.get("request_counts") or {}
    return sum(int(v) for v in counts.values() if isinstance(v, int))


def created_at(remote: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(remote.get("created_at")))
    except ValueError:
        return None


async def _followed(db: Database, backend: str) -> set[str]:
    """The remote ids this backend's batch rows already follow."""
    async with db.transaction() as session:
        rows = await session.scalars(
            select(Batch.remote_batch_id).where(Batch.backend == backend, Batch.remote_batch_id.is_not(None))
        )
        return {str(r) for r in rows.all()}


async def find_remote(
    db: Database, backend: MessageBatchAPI, key: SubmissionKey, count: int
) -> dict[str, Any] | None:
    """The remote batch a lost create of this submission made, or None (see the module doc)."""
    oldest = key.made_at - CLOCK_SLACK
    taken = await _followed(db, backend.name)
    found: dict[str, Any] | None = None
    after: str | None = None
    for _ in range(LOOKUP_PAGES):
        page = await backend.list_batches(after_id=after, limit=PAGE_SIZE)
        data = [remote for remote in page.get("data") or [] if isinstance(remote, dict)]
        for remote in data:
            made = created_at(remote)
            if made is not None and made < oldest:
                return found  # newest first: the rest is older still
            if total(remote) == count and str(remote.get("id")) not in taken:
                found = remote  # keep going: an older match is the likelier one
        if not page.get("has_more") or not data:
            return found
        after = str(page.get("last_id") or data[-1]["id"])
    log.warning("looked through %d Anthropic batches for a lost create", PAGE_SIZE * LOOKUP_PAGES)
    return found


async def create_or_adopt(
    run: AnthropicRunner, key: SubmissionKey, body: IO[bytes], count: int
) -> tuple[dict[str, Any], bool]:
    """Create the remote batch, or adopt the one a create whose answer was lost made; returns
    the batch and whether it was adopted. Bounded by the backend's retry policy."""
    policy = run.backend.retries
    attempt = 0
    while True:
        attempt += 1
        try:
            return await run.backend.create_batch(body), False
        except BatchAPIError as exc:
            if not (exc.retryable and policy.allows(attempt)):
                raise
            error = exc
        # Wait first: a batch just created may take a moment to show in the list.
        await asyncio.sleep(policy.wait(attempt, error.retry_after))
        if error.outcome_unknown:
            remote = await find_remote(run.db, run.backend, key, count)
            if remote is not None:
                return remote, True
