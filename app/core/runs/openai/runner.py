"""The OpenAI batch lifecycle: admit, upload and create (submit.py); poll (poll.py); collect
(collect.py); clean up (remote_files.py). The bad endings are named in endings.py.

Each step claims its batches with a lease, talks to the API outside any transaction and records
what it learnt in short transactions, so a process can die at any line and the next claim
resumes: a stale `submitting` batch is submitted again, a stale `collecting` one collected again
(applying a line twice changes nothing: results only land on requests still processing).

Every loop ends somewhere. Submission gives up after SUBMIT_ATTEMPTS, polling after
POLL_FAILURES_MAX consecutive failures, a late output file after OUTPUT_REPOLLS_MAX polls, a
remote cancel after CANCELLING_MAX, token_limit_exceeded after OPENAI_TOKEN_LIMIT_RETRIES
backoffs, and a request is resubmitted at most OPENAI_RESUBMIT_MAX times. Each ends in a
terminal state with the reason on the batch's timeline and in the requests' delivered errors.
"""

from __future__ import annotations

from app.core.runs.openai import poll, remote_files, submit
from app.core.runs.openai.common import Run


class OpenAIRunner(Run):
    """Moves OpenAI batches through their lifecycle; the worker calls `submit` and `poll`."""

    async def submit(self) -> bool:
        """Admit ready batches oldest first within the token limits and submit them."""
        return await submit.submit_ready(self)

    async def poll(self) -> bool:
        """Poll the remote batches that are due; collect the finished ones; retry the remote
        file deletes that failed and are due (not while the key is refused: that spends no try)."""
        more = await poll.poll_due(self)
        settings = self.effective.current
        if settings.openai_delete_files and self.gate.reason is None and self.backend.configured:
            more = await remote_files.retry_due(self) or more
        return more

    async def delete_files(self, batch_id: int) -> None:
        """Delete the batch's remote files once its results are stored (OPENAI_DELETE_FILES)."""
        await remote_files.delete_files(self, batch_id)
