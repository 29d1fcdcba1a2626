"""Every way an OpenAI batch or its requests can end badly, named once.

Each ending has the error code its requests are delivered with (also kept on the batch), the
message, and the reason on the batch's timeline, so the endings can be told apart in code, on
the timeline and in delivered errors. The bounds that end each loop are here too.

Codes OpenAI gives itself pass through unchanged: a refused line keeps its entry's code (else
LINE_REFUSED's), a batch refused as a whole keeps its first error's code (else BATCH_REFUSED's),
and a line still failing with a server error keeps that error's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

SUBMIT_ATTEMPTS = 3
POLL_FAILURES_MAX = 8
CANCELLING_MAX = timedelta(hours=1)
# A remote batch still running this long after its expires_at is not keeping its contract.
OVERDUE_GRACE = timedelta(hours=6)
# Tries at deleting an ended batch's remote files, backing off from OPENAI_POLL_SECONDS.
FILE_DELETE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Ending:
    """One bad ending. `message` and `reason` are format templates filled with the same facts;
    without a `reason` the timeline says the message."""

    code: str
    message: str
    reason: str | None = None

    def error(self, code: object = None, **facts: Any) -> dict[str, Any]:
        """The error delivered with the requests; `code` when OpenAI named a more precise one."""
        return {"code": str(code) if code else self.code, "message": self.message.format(**facts)}

    def why(self, **facts: Any) -> str:
        """The reason on the batch's timeline."""
        return (self.reason or self.message).format(**facts)


def cancelled(why: str) -> Ending:
    # A cancel that ends locally still delivers `cancelled`: the operator asked for it; `why` says how.
    return Ending("cancelled", f"the batch was cancelled ({why})", f"{why}; {{count}} requests cancelled")


# -- submission ----------------------------------------------------------------------------------
SUBMISSION_FAILED = Ending("submission_failed", "{detail}", "submission failed {tried}: {detail}")
INTERRUPTED = "submission interrupted (its process stopped)"
# Only on the timeline: no request is left to deliver an error to, and the batch keeps no error.
NOTHING_TO_SUBMIT = Ending("nothing_to_submit", "no request left to submit (all cancelled)")

# -- following the remote batch ------------------------------------------------------------------
REMOTE_UNREACHABLE = Ending("remote_unreachable", "gave up after {failures} failures: {detail}")
REMOTE_OVERDUE = Ending("remote_overdue", "OpenAI still reports {status} long after expiry")
REMOTE_GONE = cancelled("the remote batch is gone (404 on cancel)")
CANCEL_OVERDUE = cancelled("the remote cancel did not finish within {cap}")
FAILED_WHILE_CANCELLING = cancelled("OpenAI failed it while cancelling: {summary}")

# -- OpenAI failed the batch ---------------------------------------------------------------------
BATCH_REFUSED = Ending("batch_failed", "{summary}", "OpenAI failed the batch: {summary}")
LINE_REFUSED = Ending(
    "invalid_line",
    "OpenAI refused this line",
    "OpenAI refused {count} lines ({summary}); {resubmitted} others resubmitted",
)
TOKEN_LIMIT = Ending(
    "token_limit_exceeded", "OpenAI's enqueued-token limit was still exceeded after {tries} retries"
)

# -- collecting ----------------------------------------------------------------------------------
REMOTE_CANCELLED = Ending("cancelled", "the batch was cancelled before this request ran")
SERVER_ERROR_PERSISTS = Ending("server_error", "{detail} (still failing after {resubmits} resubmissions)")
RESUBMIT_LIMIT = Ending("resubmit_limit", "{why}; gave up after {limit} resubmissions")

# Why a request is resubmitted (part of RESUBMIT_LIMIT's message once its resubmissions are spent).
EXPIRED_BEFORE_RUN = "the batch expired before it ran"
NO_LINE = "no line in OpenAI's files"
OTHER_LINE_INVALID = "another line of its batch was invalid"
ANSWERED_RESUBMIT = "resubmitted by OpenAI's answer"
