"""No id names two things, and no run stores an answer into a batch it no longer holds, on SQLite
and PostgreSQL: a batch deleted (through the Anthropic SDK or the native API) or purged while a
call of it was in flight lends neither its ids nor that call's answer to the next batch; its
call is stopped when it is cancelled; and a late answer of a run whose batch was taken over is
dropped, not stored over the new holder's work."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from app.api.anthropic.schemas import batch_id_of
from app.backends.local import LocalBackend
from app.core.rules.effective import EffectiveSettings
from app.core.runs.local import LocalRunner
from app.db.models import Batch, Request
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.statuses import BatchStatus, RequestStatus
from testkit import RunningApp, StartApp, fast_settings, wait_until
from testkit.anthropic_sdk import ended, entry, results_of, sdk
from testkit.standins.inference import InferenceStandin
from testkit.standins.serve import serve

SLOW = "A-secret-SLOW5"
SLOW_SECONDS = 5.0
# Lease renewals every 20 s: only the cancel itself can stop a call in time, and the old run
# still holds its task when the next batch is created, as in the report this reproduces.
LONG_LEASE = 60.0
# How soon a cancelled batch's call in flight must be hung up on: well before the slow answer.
HANG_UP_WITHIN = 3.0


async def request_ids(db: Database, batch_id: int) -> list[int]:
    async with db.transaction() as session:
        return list((await session.scalars(select(Request.id).where(Request.batch_id == batch_id))).all())


def chat_text(request: dict[str, Any]) -> str:
    return request["result"]["response"]["body"]["choices"][0]["message"]["content"]


async def native_request(app: RunningApp, custom_id: str) -> dict[str, Any]:
    answer = await app.client.get(f"/api/requests/{custom_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def native_finished(app: RunningApp, *custom_ids: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    async def all_finished() -> bool:
        for cid in custom_ids:
            found[cid] = await native_request(app, cid)
        return all(r["status"] in ("succeeded", "failed") for r in found.values())

    await wait_until(all_finished, timeout=20, what=lambda: f"{custom_ids} finished: {found}")
    return found


async def new_requests_have_fresh_ids_and_own_answers(
    app: RunningApp, old_batch: int, old_ids: list[int]
) -> None:
    """Two new requests run in a batch of their own: ids never seen before, their own answers
    (not the old batch's call that was in flight)."""
    for custom_id in ("new-1", "new-2"):
        assert (await app.submit(custom_id, None)).status_code == 202
    new = await native_finished(app, "new-1", "new-2")
    assert min(r["batch_id"] for r in new.values()) > old_batch
    assert min(r["id"] for r in new.values()) > max(old_ids)
    texts = {cid: chat_text(r) for cid, r in new.items()}
    assert texts == {"new-1": "echo: new-1", "new-2": "echo: new-2"}


async def test_a_deleted_message_batch_lends_neither_its_ids_nor_its_late_answer(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    inference.delay_for[SLOW] = SLOW_SECONDS
    settings = fast_settings(database_url, inference.url + "/v1", lease_seconds=LONG_LEASE)
    async with start_app(settings) as app:
        client = sdk(app)
        a = await client.messages.batches.create(
            requests=[entry("a1", "A-fast"), entry("a2", SLOW)]  # type: ignore[list-item]
        )
        await wait_until(lambda: inference.calls_for(SLOW), timeout=10, what="A's slow call in flight")
        a_ids = await request_ids(app.db, batch_id_of(a.id))
        await client.messages.batches.cancel(a.id)
        await wait_until(lambda: SLOW in inference.abandoned, timeout=HANG_UP_WITHIN, what="A's call hung up")
        await ended(client, a.id)
        await client.messages.batches.delete(a.id)

        b = await client.messages.batches.create(requests=[entry("b1"), entry("b2")])  # type: ignore[list-item]
        b_ids = await request_ids(app.db, batch_id_of(b.id))
        assert batch_id_of(b.id) > batch_id_of(a.id), (a.id, b.id)
        assert min(b_ids) > max(a_ids), (a_ids, b_ids)
        assert (await ended(client, b.id)).request_counts.succeeded == 2
        results = await results_of(client, b.id)
        texts = {cid: r.result.message.content[0].text for cid, r in results.items()}  # type: ignore[union-attr]
        assert texts == {"b1": "echo: b1", "b2": "echo: b2"}


async def cancel_a_native_batch_with_a_call_in_flight(
    app: RunningApp, inference: InferenceStandin
) -> tuple[int, list[int]]:
    """A native batch of two requests, cancelled while one's call is in flight; its id and its
    requests' ids. The call is hung up on at once, not at the run's next lease renewal."""
    for custom_id in ("old-fast", "old-slow"):
        assert (await app.submit(custom_id, None)).status_code == 202
    await wait_until(lambda: inference.calls_for("old-slow"), timeout=10, what="the slow call in flight")
    batch_id = (await native_request(app, "old-slow"))["batch_id"]
    old_ids = await request_ids(app.db, batch_id)
    cancelled = await app.client.post(f"/api/batches/{batch_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    hung_up = lambda: "old-slow" in inference.abandoned  # noqa: E731
    await wait_until(hung_up, timeout=HANG_UP_WITHIN, what="the call hung up")
    return batch_id, old_ids


async def delete_batch(app: RunningApp, batch_id: int) -> None:
    deleted = await app.client.delete(f"/api/batches/{batch_id}")
    assert deleted.status_code == 200, deleted.text


async def purge_batch(app: RunningApp, batch_id: int) -> None:
    # Ended two days ago, as far as retention can tell: the next purge takes it.
    async with app.db.transaction() as session:
        two_days_ago = utcnow() - timedelta(days=2)
        await session.execute(update(Batch).where(Batch.id == batch_id).values(finished_at=two_days_ago))

    async def purged() -> bool:  # once its end is announced (the finish step's next pass)
        answer = await app.client.post("/api/purge", params={"older_than_days": 1})
        return answer.json()["batches"] == 1

    await wait_until(purged, timeout=10, what="the cancelled batch purged")


@pytest.mark.parametrize("remove", [delete_batch, purge_batch], ids=["deleted", "purged"])
async def test_a_removed_native_batch_lends_neither_its_ids_nor_its_late_answer(
    remove: Callable[[RunningApp, int], Awaitable[None]],
    database_url: str,
    inference: InferenceStandin,
    start_app: StartApp,
) -> None:
    inference.delay_for["old-slow"] = SLOW_SECONDS
    settings = fast_settings(database_url, inference.url + "/v1", lease_seconds=LONG_LEASE)
    async with start_app(settings) as app:
        old_batch, old_ids = await cancel_a_native_batch_with_a_call_in_flight(app, inference)
        await remove(app, old_batch)
        await new_requests_have_fresh_ids_and_own_answers(app, old_batch, old_ids)


async def processing_batch(db: Database, text: str) -> tuple[int, int]:
    """A local batch with one request, both processing, as the submit step leaves them."""
    now = utcnow()
    async with db.transaction() as session:
        batch = Batch(
            backend="local",
            endpoint="/v1/chat/completions",
            model="stand-in",
            origin="api",
            status=BatchStatus.PROCESSING,
            request_count=1,
            bytes=len(text),
            created_at=now,
            status_changed_at=now,
        )
        session.add(batch)
        await session.flush()
        body = {"model": "stand-in", "messages": [{"role": "user", "content": text}]}
        request = Request(
            custom_id=text,
            origin="api",
            backend="local",
            endpoint="/v1/chat/completions",
            model="stand-in",
            body=body,
            body_bytes=len(text),
            status=RequestStatus.PROCESSING,
            batch_id=batch.id,
            created_at=now,
        )
        session.add(request)
        await session.flush()
        return batch.id, request.id


async def test_a_late_answer_of_a_run_whose_batch_was_taken_over_is_dropped(
    database_url: str, inference: InferenceStandin, caplog: pytest.LogCaptureFixture
) -> None:
    # Two processes' runners, each with its own inference server held until the test lets go.
    settings = fast_settings(database_url, inference.url + "/v1", lease_seconds=LONG_LEASE)
    db = Database(database_url)
    second = InferenceStandin()
    first_backend = LocalBackend(settings)
    try:
        async with serve(second) as second_url:
            second_backend = LocalBackend(settings.model_copy(update={"local_base_url": second_url + "/v1"}))
            effective = EffectiveSettings(db, settings)
            first = LocalRunner(db, effective, first_backend, "worker-1")
            taker = LocalRunner(db, effective, second_backend, "worker-2")
            batch_id, request_id = await processing_batch(db, "taken over")
            inference.reply_for["taken over"] = "from the first run"
            second.reply_for["taken over"] = "from the run that took over"
            inference.answering.clear()
            second.answering.clear()

            assert await first.claim_and_start() == 1
            await wait_until(lambda: inference.in_flight == 1, timeout=10, what="the first run's call")
            # The first run stalls past its lease; another process takes the batch over.
            async with db.transaction() as session:
                ran_out = utcnow() - timedelta(seconds=1)
                await session.execute(update(Batch).where(Batch.id == batch_id).values(leased_until=ran_out))
            assert await taker.claim_and_start() == 1
            await wait_until(lambda: second.in_flight == 1, timeout=10, what="the second run's call")

            with caplog.at_level(logging.WARNING, logger="app.core.results"):
                inference.answering.set()  # the first run's answer comes late
                await wait_until(lambda: all(t.done() for t in first.tasks.values()), timeout=10)
            assert "dropped 1 late results of batch" in caplog.text
            async with db.transaction() as session:
                request = await session.get(Request, request_id)
                assert request is not None and request.status == RequestStatus.PROCESSING

            second.answering.set()
            await wait_until(lambda: all(t.done() for t in taker.tasks.values()), timeout=10)
            async with db.transaction() as session:
                request = await session.get(Request, request_id)
                batch = await session.get(Batch, batch_id)
                assert request is not None and batch is not None
                assert request.status == RequestStatus.SUCCEEDED
                assert request.response["body"]["choices"][0]["message"]["content"] == (
                    "from the run that took over"
                )
                assert (batch.status, batch.completed_count) == (BatchStatus.DONE, 1)
            await first.stop()
            await taker.stop()
            await second_backend.close()
    finally:
        await first_backend.close()
        await db.dispose()
