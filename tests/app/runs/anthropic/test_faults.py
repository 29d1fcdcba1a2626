"""An Anthropic batch through the API's faults: 429 and 529 retried (honouring retry-after), a
refused key stops the backend visibly until it works again, a create whose answer was lost is
found again (one remote batch), an operator's cancel reaches Anthropic, and results past their
29 days end the batch failed with the reason; each on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.core.actions.batches import cancel_batch
from app.core.runs.anthropic import endings
from app.db.models import Batch, Request
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.statuses import BatchStatus, RequestStatus
from app.net.outbound import RetryPolicy
from testkit.anthropic_batch import batch_row, ready_batch, requests_of, run_until, runner, timeline
from testkit.standins.anthropic_batch import BATCHES, AnthropicBatchStandin

CREATE = ("POST", BATCHES)


@pytest.mark.parametrize("status", [429, 529])
async def test_a_busy_api_is_retried_and_the_batch_runs_once(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin, status: int
) -> None:
    # The create is answered busy once (nothing was done: sent again), a poll busy twice
    # (the adapter's own retries), with retry-after honoured.
    anthropic_api.fail_next = {f"POST {BATCHES}": [status], f"GET {BATCHES}/": [status, status]}
    batch_id = await ready_batch(db, "one", "two")
    async with runner(db, database_url, anthropic_api) as run:
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.DONE, await timeline(db, batch_id)
    assert len(anthropic_api.batches) == 1
    assert anthropic_api.calls.count(CREATE) == 2
    assert {r.status for r in (await requests_of(db, batch_id)).values()} == {RequestStatus.SUCCEEDED}


async def test_a_busy_create_is_sent_again_after_the_wait_retry_after_asks(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin
) -> None:
    # The create is retried by the core's loop (the adapter sends it once), whose backoff here
    # is 0.01 s: a gap of the header's 0.4 s shows the header was honoured.
    anthropic_api.fail_next = {f"POST {BATCHES}": [429]}
    anthropic_api.retry_after = "0.4"
    batch_id = await ready_batch(db, "one")
    async with runner(db, database_url, anthropic_api) as run:
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.DONE, await timeline(db, batch_id)
    creates = [
        at for call, at in zip(anthropic_api.calls, anthropic_api.call_times, strict=True) if call == CREATE
    ]
    assert len(creates) == 2
    assert creates[1] - creates[0] >= 0.4


async def test_polls_that_keep_failing_end_the_batch_failed_with_the_reason(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin
) -> None:
    anthropic_api.fail_next = {f"GET {BATCHES}/": [529] * 100}
    batch_id = await ready_batch(db, "stuck")
    async with runner(db, database_url, anthropic_api) as run:
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.FAILED
    assert batch.error is not None and batch.error["code"] == "remote_unreachable"
    assert f"try 2 of {endings.POLL_FAILURES_MAX}" in await timeline(db, batch_id)
    [request] = (await requests_of(db, batch_id)).values()
    assert request.status == RequestStatus.FAILED and request.error is not None
    assert "overloaded_error" not in request.error["code"] and "529" in request.error["message"]


async def test_a_refused_key_stops_the_backend_visibly_until_it_works_again(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin
) -> None:
    anthropic_api.refuse_key = True
    batch_id = await ready_batch(db, "waits")
    async with runner(db, database_url, anthropic_api) as run:
        await run.submit()
        batch = await batch_row(db, batch_id)
        assert batch.status == BatchStatus.READY and batch.run_failures == 0
        assert run.gate.reason is not None and "Anthropic refused the API key (401)" in run.gate.reason
        await run.submit()  # while the gate is shut, the ready batch says why
        assert "submission stopped for all batches" in str((await batch_row(db, batch_id)).wait_reason)
        assert anthropic_api.calls.count(CREATE) == 1
        anthropic_api.refuse_key = False
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.DONE
    assert run.gate.reason is None


@pytest.mark.parametrize("fault", ["500", "disconnect"])
async def test_a_create_whose_answer_was_lost_is_found_again_not_sent_twice(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin, fault: str
) -> None:
    anthropic_api.lost_create_answers = [fault]
    batch_id = await ready_batch(db, "once-a", "once-b")
    async with runner(db, database_url, anthropic_api) as run:
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.DONE, await timeline(db, batch_id)
    [remote_id] = anthropic_api.batches  # exactly one remote batch: nothing created twice
    assert batch.remote_batch_id == remote_id
    assert anthropic_api.calls.count(CREATE) == 1
    assert "found again: the create's answer was lost" in await timeline(db, batch_id)
    assert {r.status for r in (await requests_of(db, batch_id)).values()} == {RequestStatus.SUCCEEDED}


async def test_a_lost_create_is_not_confused_with_another_batch_already_followed(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin
) -> None:
    first = await ready_batch(db, "first")
    async with runner(db, database_url, anthropic_api) as run:
        assert (await run_until(run, first)).status == BatchStatus.DONE
        anthropic_api.lost_create_answers = ["500"]
        second = await ready_batch(db, "second")  # the same size as the first
        batch = await run_until(run, second)
    assert batch.status == BatchStatus.DONE
    assert (
        len(anthropic_api.batches) == 2
        and batch.remote_batch_id != (await batch_row(db, first)).remote_batch_id
    )


async def test_an_operator_cancel_reaches_anthropic(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin
) -> None:
    anthropic_api.polls_to_end = 1000
    batch_id = await ready_batch(db, "c1", "c2")
    async with runner(db, database_url, anthropic_api) as run:
        await run_until(run, batch_id, {BatchStatus.PROCESSING})
        await cancel_batch(db, run.effective.current, batch_id)
        assert (await batch_row(db, batch_id)).status == BatchStatus.CANCELLING
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.CANCELLED, await timeline(db, batch_id)
    [remote_id] = anthropic_api.batches
    assert ("POST", f"{BATCHES}/{remote_id}/cancel") in anthropic_api.calls
    assert {r.status for r in (await requests_of(db, batch_id)).values()} == {RequestStatus.CANCELLED}


@pytest.mark.parametrize("how", ["archived", "29 days"])
async def test_results_that_expired_end_the_batch_failed_with_the_reason(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin, how: str
) -> None:
    if how == "archived":
        anthropic_api.results_expired = True
    else:
        anthropic_api.created_at = datetime.now(UTC) - timedelta(days=30)
    batch_id = await ready_batch(db, "too late")
    async with runner(db, database_url, anthropic_api) as run:
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.FAILED
    assert batch.error is not None and batch.error["code"] == "results_expired"
    assert "29 days after creation" in await timeline(db, batch_id)
    [request] = (await requests_of(db, batch_id)).values()
    assert request.status == RequestStatus.FAILED and request.error is not None
    assert request.error["code"] == "results_expired"


async def test_a_request_that_cannot_be_translated_fails_and_the_others_go(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin
) -> None:
    batch_id = await ready_batch(db, "fine", "odd", endpoint="/v1/chat/completions")
    async with db.transaction() as session:
        await session.execute(
            update(Request).where(Request.custom_id == "odd").values(body={"messages": [], "tools": [{}]})
        )
    async with runner(db, database_url, anthropic_api) as run:
        batch = await run_until(run, batch_id)
    got = await requests_of(db, batch_id)
    assert got["fine"].status == RequestStatus.SUCCEEDED
    assert got["odd"].status == RequestStatus.FAILED and got["odd"].error is not None
    assert got["odd"].error["code"] == "invalid_request"
    assert batch.status == BatchStatus.DONE


async def test_only_this_backends_batches_are_taken(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin
) -> None:
    other = await ready_batch(db, "not mine", backend="openai")
    async with runner(db, database_url, anthropic_api) as run:
        assert not await run.submit()
    assert (await batch_row(db, other)).status == BatchStatus.READY
    assert CREATE not in anthropic_api.calls


async def test_a_submission_whose_process_died_after_the_create_follows_that_batch(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin
) -> None:
    # A first process stored the key, sent the create (Anthropic made the batch) and died
    # before it recorded anything: its lease runs out, and the next process finds the batch.
    batch_id = await ready_batch(db, "died-1", "died-2")
    async with runner(db, database_url, anthropic_api) as first:
        anthropic_api.lost_create_answers = ["disconnect"]
        first.backend.retries = RetryPolicy(0, 0.0)  # the dying process never retries
        await first.submit()
    assert len(anthropic_api.batches) == 1
    async with db.transaction() as session:
        await session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status=BatchStatus.SUBMITTING, leased_by="dead", leased_until=utcnow() - timedelta(seconds=1)
            )
        )
    async with runner(db, database_url, anthropic_api) as run:
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.DONE, await timeline(db, batch_id)
    assert len(anthropic_api.batches) == 1 and anthropic_api.calls.count(CREATE) == 1
    assert "an earlier create landed" in await timeline(db, batch_id)


async def test_a_cancel_that_comes_after_the_batch_ended_keeps_every_result(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin
) -> None:
    anthropic_api.polls_to_end = 1000
    batch_id = await ready_batch(db, "late-1", "late-2")
    async with runner(db, database_url, anthropic_api) as run:
        await run_until(run, batch_id, {BatchStatus.PROCESSING})
        [remote_id] = anthropic_api.batches
        anthropic_api._end(remote_id)  # Anthropic finished it before the operator's cancel arrived
        await cancel_batch(db, run.effective.current, batch_id)
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.DONE, await timeline(db, batch_id)
    assert ("POST", f"{BATCHES}/{remote_id}/cancel") in anthropic_api.calls
    assert {r.status for r in (await requests_of(db, batch_id)).values()} == {RequestStatus.SUCCEEDED}
