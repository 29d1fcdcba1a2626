"""Every way an Anthropic batch or its requests can end badly, named once (see the OpenAI
runner's endings.py for the shape: a code, a delivered message and a timeline reason)."""

from __future__ import annotations

from datetime import timedelta

from app.core.runs.openai.endings import Ending, cancelled

SUBMIT_ATTEMPTS = 3
POLL_FAILURES_MAX = 8
CANCELLING_MAX = timedelta(hours=1)
# Anthropic ends a batch within 24 h (expires_at); one still running long after is not keeping it.
OVERDUE_GRACE = timedelta(hours=6)
# Results can be read for 29 days after the batch was created.
RESULTS_KEPT = timedelta(days=29)
# Anthropic's own limits for one batch.
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024

SUBMISSION_FAILED = Ending("submission_failed", "{detail}", "submission failed {tried}: {detail}")
NOTHING_TO_SUBMIT = Ending("nothing_to_submit", "no request left to submit (all cancelled)")
NOT_TRANSLATABLE = Ending("invalid_request", "not sent to Anthropic: {detail}")
TOO_LARGE = Ending(
    "batch_too_large",
    "the batch is larger than Anthropic allows (100,000 requests, 256 MB) and its membership is fixed",
)
REMOTE_UNREACHABLE = Ending("remote_unreachable", "gave up after {failures} failures: {detail}")
REMOTE_OVERDUE = Ending("remote_overdue", "Anthropic still reports {status} long after expiry")
RESULTS_EXPIRED = Ending(
    "results_expired",
    "Anthropic no longer keeps this batch's results ({detail}); they expire 29 days after creation",
)
REMOTE_GONE = cancelled("the remote batch is gone (404 on cancel)")
CANCEL_OVERDUE = cancelled("the remote cancel did not finish within {cap}")
NO_RESULT = Ending("no_result", "Anthropic's results hold no line for this request")
REMOTE_CANCELLED = Ending("cancelled", "the batch was cancelled before this request ran")
REMOTE_EXPIRED = Ending("expired", "the batch expired at Anthropic before this request ran")
