"""The operator's actions on one batch: close it now, cancel, retry, redeliver its results, delete.

The UI and the API call these; each checks the current state under a row lock, so an action
that raced the pipeline answers with a Conflict instead of corrupting a batch.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.base import BatchAPI
from app.core import results
from app.core.dropin.create import DROPIN_ORIGINS
from app.core.rules import audit, leases, routing, states
from app.core.rules.errors import Conflict, Problem, found
from app.core.runs.openai import remote_files
from app.db.models import Batch, BatchEvent, Delivery, Request
from app.db.session import Database, rows_changed
from app.ground.clock import utcnow
from app.ground.config import Settings
from app.ground.statuses import BatchStatus, DeliveryStatus, RequestStatus

# No batch API client to delete remote files through.
EMPTY: Mapping[str, BatchAPI] = {}
CANCELLED_ERROR = {"code": "cancelled", "message": "cancelled by the operator"}
# A drop-in batch's unfinished lines say it in OpenAI's words (its error file and results).
DROPIN_CANCELLED_ERROR = {
    "code": "batch_cancelled",
    "message": "This request was not run: its batch was cancelled.",
}

# Which requests a cancel ends, by the batch's status. A building batch has no requests of its
# own yet: it stands for its group's pending requests, so cancelling it cancels those.
_CANCELLABLE_REQUESTS: dict[str, RequestStatus] = {
    BatchStatus.BUILDING: RequestStatus.PENDING,
    BatchStatus.READY: RequestStatus.BATCHED,
    BatchStatus.PROCESSING: RequestStatus.PROCESSING,
}


async def cancel_batch(db: Database, settings: Settings, batch_id: int, via: str = "api") -> Batch:
    """Cancel a batch that has not finished; its unfinished requests end as cancelled."""
    async with db.transaction() as session:
        batch = await _locked_batch(session, batch_id)
        request_status = _CANCELLABLE_REQUESTS.get(batch.status)
        if request_status is None:
            raise Conflict(
                Problem(
                    "batch_not_cancellable",
                    "Batch cannot be cancelled",
                    f"Batch {batch_id} is {batch.status}; only building, ready and processing batches "
                    "can be cancelled.",
                )
            )
        if batch.status == BatchStatus.PROCESSING and routing.runs_batches(settings, batch.backend):
            # The remote batch is asked to cancel by the poll step; what it finished by then is
            # still collected, and the rest ends cancelled when the remote API confirms.
            states.move_batch(session, batch, BatchStatus.CANCELLING, "cancel requested by operator")
            batch.cancel_sent = False
            batch.next_attempt_at = None
            leases.release(batch)
            return batch
        if batch.status == BatchStatus.BUILDING:
            where = [
                Request.status == RequestStatus.PENDING,
                Request.backend == batch.backend,
                Request.endpoint == batch.endpoint,
                Request.model == batch.model,
            ]
        else:
            where = [Request.batch_id == batch_id, Request.status == request_status]
        ids = list((await session.scalars(select(Request.id).where(*where))).all())
        # Pending requests of a building batch are attached to it, so its page lists them.
        attach = {"batch_id": batch.id} if batch.status == BatchStatus.BUILDING else {}
        cancelled = await results.close_without_result(
            session, ids, request_status, RequestStatus.CANCELLED, _cancelled_error(batch), **attach
        )
        if batch.status == BatchStatus.BUILDING:
            batch.request_count = len(cancelled)
        await audit.note_requests(session, cancelled, "cancel", {"via": via, "batch_id": batch_id})
        reason = f"cancelled by operator ({len(cancelled)} requests cancelled)"
        if batch.status == BatchStatus.PROCESSING:
            # The local backend has nothing remote to wait for; dropping the lease stops the
            # runner (its next renewal fails) and any late result finds its request cancelled.
            states.move_batch(session, batch, BatchStatus.CANCELLING, "cancel requested by operator")
            leases.release(batch)
        states.move_batch(session, batch, BatchStatus.CANCELLED, reason)
    return batch


def _cancelled_error(batch: Batch) -> dict[str, str]:
    return DROPIN_CANCELLED_ERROR if batch.origin in DROPIN_ORIGINS else CANCELLED_ERROR


async def retry_batch(db: Database, batch_id: int, via: str = "api") -> Batch:
    """Run a failed batch again: its failed requests go back into it and it is ready once more."""
    async with db.transaction() as session:
        batch = await _locked_batch(session, batch_id)
        if batch.status != BatchStatus.FAILED:
            raise Conflict(
                Problem(
                    "batch_not_failed",
                    "Only failed batches can be retried",
                    f"Batch {batch_id} is {batch.status}.",
                )
            )
        ids = list(
            (
                await session.scalars(
                    select(Request.id).where(
                        Request.batch_id == batch_id, Request.status == RequestStatus.FAILED
                    )
                )
            ).all()
        )
        moved = await states.move_requests(
            session,
            ids,
            RequestStatus.FAILED,
            RequestStatus.BATCHED,
            response=None,
            error=None,
            completed_at=None,
        )
        # Their old failures must not reach the receiver after (or instead of) the new results.
        await states.move_deliveries(
            session,
            [Delivery.request_id.in_(ids)],
            states.DELIVERY_DUE,
            DeliveryStatus.SUPERSEDED,
            next_attempt_at=None,
            **leases.RELEASED,
        )
        batch.failed_count = max(batch.failed_count - moved, 0)
        batch.run_failures = batch.token_limit_retries = batch.output_repolls = 0
        batch.error = batch.wait_reason = batch.next_attempt_at = batch.estimated_tokens = None
        # An OpenAI batch is uploaded afresh (its old input file may be gone, and it held more lines).
        # It is a new submission: a fresh key, so that the old remote batch is never adopted.
        batch.remote_batch_id = batch.remote_status = None
        batch.submission_key = batch.submission_key_at = None
        batch.input_file_id = batch.output_file_id = batch.error_file_id = batch.files_deleted_at = None
        # Files of the old submission not deleted yet are left behind: its delete retries stop.
        batch.files_delete_attempts, batch.files_delete_next_at, batch.files_delete_error = 0, None, None
        states.move_batch(
            session, batch, BatchStatus.READY, f"retried by operator ({moved} requests to run again)"
        )
        await audit.note_requests(session, ids, "retry", {"via": via, "batch_id": batch_id})
    return batch


async def delete_batch(db: Database, batch_id: int, batch_apis: Mapping[str, BatchAPI] = EMPTY) -> int:
    """Delete a finished batch with its requests and their trails; returns how many requests went.

    Refused while any of its results is still waiting to be delivered: retention never drops an
    undelivered result. Its remote files not deleted yet are deleted too, through its backend's
    client in `batch_apis` (by backend name) when it is there.
    """
    async with db.transaction() as session:
        batch = await _locked_batch(session, batch_id)
        if batch.status not in states.BATCH_TERMINAL:
            raise Conflict(
                Problem(
                    "batch_not_finished",
                    "Only finished batches can be deleted",
                    f"Batch {batch_id} is {batch.status}; cancel it first.",
                )
            )
        of_batch = select(Request.id).where(Request.batch_id == batch_id)
        waiting = await session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.request_id.in_(of_batch), Delivery.status.in_(states.DELIVERY_DUE))
        )
        if waiting:
            raise Conflict(
                Problem(
                    "undelivered_results",
                    "Batch has undelivered results",
                    f"{waiting} results of batch {batch_id} are still being delivered; "
                    "delete it once they are delivered or failed.",
                )
            )
        # Deliveries, their attempts and the request trail go with the requests (ON DELETE CASCADE).
        deleted = await rows_changed(
            session,
            delete(Request).where(Request.batch_id == batch_id).execution_options(synchronize_session=False),
        )
        await session.execute(delete(BatchEvent).where(BatchEvent.batch_id == batch_id))
        remote_file_ids = [
            f
            for f in (batch.input_file_id, batch.output_file_id, batch.error_file_id)
            if f and batch.files_deleted_at is None
        ]
        remote = batch_apis.get(batch.backend)
        await session.delete(batch)
    if remote_file_ids and remote is not None:
        await remote_files.delete_remote_files(remote, remote_file_ids)
    return deleted


async def _locked_batch(session: AsyncSession, batch_id: int) -> Batch:
    batch = found(await leases.lock(session, Batch, batch_id), "batch", batch_id)
    return batch


async def close_batch(db: Database, batch_id: int) -> Batch:
    """The operator's "close now": the batcher closes the batch on its next pass."""
    async with db.transaction() as session:
        batch = found(await session.get(Batch, batch_id), "batch", batch_id)
        if batch.status != BatchStatus.BUILDING:
            raise Conflict(
                Problem("batch_not_building", "Batch is not building", f"Batch {batch_id} is {batch.status}.")
            )
        batch.close_requested = True
    return batch


async def redeliver_batch(db: Database, batch_id: int, only_failed: bool, via: str = "api") -> int:
    """Queue again the deliveries of a batch's requests: the failed ones, or all that ended."""
    ended = (DeliveryStatus.DELIVERY_FAILED,) if only_failed else states.DELIVERY_ENDED
    async with db.transaction() as session:
        # Locked: a purge (app.core.retention) skips it, and one that took it first leaves NotFound.
        batch = await _locked_batch(session, batch_id)
        # Its results' deliveries: a request's event to a subscription was sent as it happened.
        of_batch = and_(
            Delivery.request_id.in_(select(Request.id).where(Request.batch_id == batch_id)),
            Delivery.subscription_id.is_(None),
        )
        ended_of_batch = select(Delivery.request_id).where(of_batch, Delivery.status.in_(ended))
        # A batch event's delivery has no request: none is of the batch, but the column may be NULL.
        ids = [i for i in (await session.scalars(ended_of_batch)).all() if i is not None]
        moved = await states.move_deliveries(
            session,
            [of_batch],
            ended,
            DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=utcnow(),
            last_error=None,
            delivered_at=None,
            **leases.RELEASED,
        )
        if not moved:
            which = "failed deliveries" if only_failed else "finished deliveries"
            raise Conflict(
                Problem("nothing_to_redeliver", "Nothing to redeliver", f"Batch {batch_id} has no {which}.")
            )
        what = "failed deliveries" if only_failed else "deliveries"
        states.note_batch(session, batch, f"operator redelivered {moved} {what}")
        await audit.note_requests(session, ids, "redeliver", {"via": via, "batch_id": batch_id})
    return moved
