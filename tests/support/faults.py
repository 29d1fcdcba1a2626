"""Faults caused for real in a running app."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from app.core.runtime.clock import utcnow
from app.db.models import Batch
from tests.standins.inference import InferenceStandin
from tests.support.apps import RunningApp
from tests.support.waiting import wait_until


async def kill_runs(app: RunningApp, inference: InferenceStandin, key: str, times: int) -> None:
    """Each time the line `key` is running, its process "dies": the lease passes to an owner
    that is gone, as after a SIGKILL, and the run stops here when its heartbeat sees that.
    The line must not finish on its own meanwhile (give it a long `delay_for`)."""
    for run in range(1, times + 1):
        await wait_until(lambda n=run: inference.calls_by_key[key] == n, timeout=20, what=f"run {run}")
        async with app.db.transaction() as session:
            await session.execute(
                update(Batch)
                .where(Batch.status == "processing")
                .values(leased_by="gone:1:dead", leased_until=utcnow())
            )


async def kill_submission(app: RunningApp) -> None:
    """The process submitting a batch "dies": its lease passes to an owner that is gone, as after
    a SIGKILL, so its work stops when its heartbeat sees that, and the lease runs out a lease
    later, when the next submission round takes the batch over."""
    lease = timedelta(seconds=app.settings.lease_seconds)
    async with app.db.transaction() as session:
        await session.execute(
            update(Batch)
            .where(Batch.status == "submitting")
            .values(leased_by="gone:1:dead", leased_until=utcnow() + lease)
        )
