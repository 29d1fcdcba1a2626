"""Every status a row can be in, one enum per table, each member saying what it means.

Only `app.core.rules.states` moves a row from one status to another (its transitions table says
which moves are allowed); everything else only reads these names.
"""

from __future__ import annotations

from enum import StrEnum


class BatchStatus(StrEnum):
    BUILDING = "building"  # gathering pending requests of one (backend, endpoint, model)
    READY = "ready"  # closed: its requests are fixed, waiting for its backend
    SUBMITTING = "submitting"  # being handed to its backend (a remote create may be in flight)
    PROCESSING = "processing"  # running: lines on a local server, or a remote batch in progress
    COLLECTING = "collecting"  # the backend finished; its results are being stored
    CANCELLING = "cancelling"  # a cancel was asked for; the backend is winding it down
    DONE = "done"  # every request has its result (success or error)
    FAILED = "failed"  # the backend refused or lost it; unfinished requests went back to batching
    CANCELLED = "cancelled"  # ended by a cancel; unfinished requests are cancelled
    EXPIRED = "expired"  # its completion window closed before it finished


class RequestStatus(StrEnum):
    PENDING = "pending"  # accepted, in no batch yet
    BATCHED = "batched"  # in a batch that has not started running
    PROCESSING = "processing"  # its batch is running
    SUCCEEDED = "succeeded"  # the backend answered it
    FAILED = "failed"  # the backend answered with an error, or it could not run
    CANCELLED = "cancelled"  # cancelled before it had a result
    EXPIRED = "expired"  # its batch's completion window closed before it had a result


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due to be sent, never attempted
    RETRYING = "retrying"  # attempted and failed; due again at next_attempt_at
    DELIVERED = "delivered"  # a destination acknowledged it
    DELIVERY_FAILED = "delivery_failed"  # attempts ran out or the failure was permanent
    SUPERSEDED = "superseded"  # its request runs again (a retried batch): a new delivery follows


class BreakerState(StrEnum):
    """A destination's circuit breaker (app.core.destinations.breaker)."""

    CLOSED = "closed"  # sending as usual
    OPEN = "open"  # held: its deliveries wait, unattempted, until a probe (or an operator resumes it)
    PROBING = "probing"  # one delivery is out to find whether it answers again


class Outcome(StrEnum):
    """How one delivery attempt ended."""

    SUCCESS = "success"  # the destination acknowledged it (2xx, or a broker confirm)
    RETRYABLE_FAILURE = "retryable_failure"  # worth trying again later (timeout, 5xx, 429)
    PERMANENT_FAILURE = "permanent_failure"  # trying again cannot help (4xx, refused target)


class RecoveryStatus(StrEnum):
    """An operator's bulk recovery or replay (app.core.recoveries)."""

    QUEUED = "queued"  # asked for; the recover step has not started it
    RUNNING = "running"  # being worked through, a chunk at a time
    DONE = "done"  # every delivery in its scope was queued again (or created, for a replay)
    FAILED = "failed"  # it could not go on (the error says why); what it queued stays queued
    CANCELLED = "cancelled"  # stopped by the operator; what it queued before stays queued


class RecoveryKind(StrEnum):
    RECOVER = "recover"  # queue a destination's failed deliveries again
    REPLAY = "replay"  # send results again, as new deliveries, to a new target
