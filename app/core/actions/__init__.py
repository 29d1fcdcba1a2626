"""The actions faces take (the operator's, and creating drop-in batches), as the UI and the
APIs call them.

Each action changes the database through the functions in batches.py, requests.py, the
drop-in batch creation or the runtime settings, then wakes the pipeline steps that now have
work. Faces call these methods and nothing else, so "a cancel must reach the poll and deliver
steps" is said once, here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

from app.backends.base import BatchAPI
from app.core import owner_limits, retention
from app.core.actions import batches, destinations, requests
from app.core.destinations import rows as destination_rows
from app.core.dropin import anthropic, create
from app.core.read.destinations import held as held_destinations
from app.core.read.queries import seen_batch
from app.core.recoveries import ask
from app.core.rules import routing
from app.core.rules.effective import EffectiveSettings
from app.core.rules.errors import InvalidInput, Problem
from app.core.rules.owners import Caller
from app.db.models import Batch, Delivery, Destination, File, Recovery, Request
from app.db.session import Database
from app.ground.steps import Step, Wake


def _recover_key(given: str) -> str:
    """The destination key a recover names (its key, or any webhook URL of it)."""
    try:
        return destination_rows.key_of(given)
    except ValueError:  # a URL urllib cannot split, e.g. "http://[": no destination's
        detail = f"{given[:80]!r} is not a destination key or a webhook URL."
        raise InvalidInput(
            Problem("invalid_destination", "Invalid recovery", detail, "/destination")
        ) from None


class Actions:
    """The operator's actions bound to one process's database, settings, step waker and batch
    API clients (by backend name: deleting a batch deletes its remote files there)."""

    def __init__(
        self, db: Database, effective: EffectiveSettings, wake: Wake, batch_apis: Mapping[str, BatchAPI]
    ) -> None:
        self.db = db
        self.effective = effective
        self.batch_apis = dict(batch_apis)
        self._wake = wake

    def _waking(self, *steps: Step) -> None:
        for step in steps:
            self._wake(step)

    async def create_batch_from_file(
        self,
        caller: Caller,
        file: File,
        endpoint: str,
        metadata: dict[str, str] | None,
        output_expires_after: timedelta | None = None,
    ) -> Batch:
        """A drop-in batch of `caller`'s from an uploaded file (OpenAI face); ready, or failed
        with its problems."""
        settings = await self.effective.fresh()
        batch = await create.from_file(
            self.db, settings, file, endpoint, metadata, output_expires_after, caller=caller
        )
        self._waking(Step.SUBMIT)
        return batch

    async def create_batch_from_requests(
        self, caller: Caller, body: AsyncIterator[bytes], max_bytes: int, webhook_url: str | None = None
    ) -> Batch:
        """A drop-in batch from a request list, read as its body arrives (Anthropic face), with
        its own completion webhook when `webhook_url` is given (refused before the body is read
        when no delivery could go there)."""
        settings = await self.effective.fresh()
        create.check_webhook(webhook_url, settings, create.WEBHOOK_HEADER)
        batch = await anthropic.from_body(
            self.db,
            settings.data_dir,
            body,
            max_bytes,
            settings.local_default_model,
            lambda model: routing.messages_backend(settings, model),
            webhook_url,
            owner=caller.owner,
            admit=lambda size: owner_limits.admit(self.db, settings, caller, [size]),
        )
        self._waking(Step.SUBMIT)
        return batch

    async def _visible(self, batch_id: int, caller: Caller) -> None:
        """NotFound for a batch the caller may not see: a team acts on its own batches only."""
        if not caller.admin:
            async with self.db.transaction() as session:
                seen_batch(await session.get(Batch, batch_id), batch_id, caller)

    async def close_batch(self, batch_id: int, caller: Caller) -> Batch:
        await self._visible(batch_id, caller)
        batch = await batches.close_batch(self.db, batch_id)
        self._waking(Step.FORM)
        return batch

    async def cancel_batch(self, batch_id: int, caller: Caller, via: str = "api") -> Batch:
        await self._visible(batch_id, caller)
        batch = await batches.cancel_batch(self.db, await self.effective.fresh(), batch_id, via)
        # Cancelled requests deliver their news; a remote batch is cancelled by the poll step;
        # a drop-in batch's files are written by the finish step; the run step stops a local
        # run's calls in flight.
        self._waking(Step.DELIVER, Step.POLL, Step.FINISH, Step.RUN)
        return batch

    async def retry_batch(self, batch_id: int, caller: Caller, via: str = "api") -> Batch:
        await self._visible(batch_id, caller)
        batch = await batches.retry_batch(self.db, batch_id, via)
        self._waking(Step.SUBMIT)
        return batch

    async def redeliver_batch(
        self, batch_id: int, caller: Caller, only_failed: bool, via: str = "api"
    ) -> int:
        await self._visible(batch_id, caller)
        moved = await batches.redeliver_batch(self.db, batch_id, only_failed, via)
        self._waking(Step.DELIVER)
        return moved

    async def delete_batch(self, batch_id: int, caller: Caller) -> int:
        await self._visible(batch_id, caller)
        deleted = await batches.delete_batch(self.db, batch_id, self.batch_apis)
        # A run of the batch still in flight (its cancel's wake not yet acted on) stops now.
        self._waking(Step.RUN)
        return deleted

    async def purge(self, older_than_days: Any = None) -> retention.Purged:
        """Purge now what ended more than `older_than_days` ago (RETENTION_DAYS when not given),
        for at most retention.NOW_SECONDS; `more` says some is left for another press."""
        settings = await self.effective.fresh()
        given = older_than_days not in (None, "")
        days = retention.checked_days(older_than_days) if given else settings.retention_days
        remote = self.batch_apis if settings.openai_delete_files else {}
        purged = await retention.purge(self.db, settings.data_dir, days, retention.NOW_SECONDS, remote)
        if purged.more:
            # The scheduler's purge carries on with what is older than RETENTION_DAYS.
            self._waking(Step.PURGE)
        return purged

    async def cancel_request(self, custom_id: str | int, caller: Caller, via: str = "api") -> Request:
        request = await requests.cancel_request(self.db, custom_id, caller, via)
        self._waking(Step.DELIVER)
        return request

    async def redeliver_request(
        self, custom_id: str | int, caller: Caller, via: str = "api", delivery_id: int | None = None
    ) -> list[Delivery]:
        """Queue a request's deliveries again: every destination's, or the one `delivery_id` names."""
        settings = await self.effective.fresh()
        queued = await requests.redeliver(self.db, settings, custom_id, caller, via, delivery_id)
        self._waking(Step.DELIVER)
        return queued

    async def change_delivery(
        self, custom_id: str | int, caller: Caller, config: Any, via: str = "api"
    ) -> dict[str, Any] | list[dict[str, Any]]:
        settings = await self.effective.fresh()
        new = await requests.change_delivery(self.db, settings, custom_id, caller, config, via)
        # A queued delivery now goes to its new target: try it there at once.
        self._waking(Step.DELIVER)
        return new

    async def ask_recovery(self, data: Any, via: str = "api") -> ask.Asked:
        """Start a recover or a replay (or answer the same one already under way). A recover's
        destination may be given as its key or as any webhook URL of it, as for its limits."""
        if (
            isinstance(data, dict)
            and data.get("kind") == "recover"
            and isinstance(data.get("destination"), str)
        ):
            data = {**data, "destination": _recover_key(data["destination"])}
        asked = await ask.ask(self.db, await self.effective.fresh(), data, via)
        self._waking(Step.RECOVER)
        return asked

    async def cancel_recovery(self, recovery_id: int, via: str = "api") -> Recovery:
        return await ask.cancel(self.db, recovery_id, via)

    async def set_destination_limits(
        self, destination: str | int, concurrency: Any, rate_per_second: Any
    ) -> Destination:
        """Override a destination's limits, named by its URL or key (made when new) or its id."""
        key = await self._destination_key(destination)
        return await destinations.set_limits(self.db, key, concurrency, rate_per_second)

    async def pause_destination(self, destination: str | int, via: str = "api") -> Destination:
        key = await self._destination_key(destination)
        row = await destinations.pause(self.db, key, via, await self._events_url())
        held_destinations.forget()  # the operator sees the change at once, not 5 s later
        return row

    async def resume_destination(self, destination: str | int, via: str = "api") -> Destination:
        key = await self._destination_key(destination)
        row = await destinations.resume(self.db, key, via, await self._events_url())
        held_destinations.forget()
        self._waking(Step.DELIVER)
        return row

    async def _destination_key(self, destination: str | int) -> str:
        if isinstance(destination, str):
            return destination_rows.key_of(destination)
        async with self.db.transaction() as session:
            return await destinations.key_by_id(session, destination)

    async def _events_url(self) -> str | None:
        url = (await self.effective.fresh()).batch_events_webhook_url
        return str(url) if url else None

    async def save_settings(self, form: dict[str, Any]) -> dict[str, Any]:
        stored = await self.effective.save(form)
        # Lower limits can make a group due at once.
        self._waking(Step.FORM)
        return stored

    async def reset_settings(self) -> None:
        await self.effective.reset()
        self._waking(Step.FORM)
