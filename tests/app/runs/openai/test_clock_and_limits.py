"""Pins the OpenAI backend's clock-driven and refusal branches, and the limits the README promises,
against the stand-in Batch API. Hours pass by setting the stand-in's clock (for the times OpenAI
reports) or by moving the app's own timestamp columns back in the database; no app code is patched.
The README's numbers are asserted as literals, counted from the calls the stand-in received."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from app.db.models import Batch
from app.ground.config import Settings
from testkit import RunningApp, StartApp, wait_until
from testkit.openai import batches, finished, openai_settings, reasons, submit
from testkit.standins.openai_batch import OpenAIBatchStandin
from testkit.standins.receiver import WebhookReceiver

HOUR = 3600.0


def polling_settings(database_url: str, api: OpenAIBatchStandin) -> Settings:
    """Polls every 10 ms and no retries within one call, so each failure is one counted poll."""
    return openai_settings(database_url, api, openai_max_retries=0, openai_poll_seconds=0.01)


async def remote_batch_processing(app: RunningApp, receiver: WebhookReceiver, custom_id: str) -> str:
    """Submit one request and wait until its batch runs remotely; returns the remote batch id."""
    await submit(app, receiver, custom_id)
    batch = await batch_in(app, "processing")
    return str(batch["remote"]["batch_id"])


async def submission_failed(
    app: RunningApp, receiver: WebhookReceiver, custom_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait for the request to end; assert it, its delivered error and its (only) batch say
    submission_failed; returns the batch and the delivered error."""
    details = await finished(app, custom_id)
    assert details[custom_id]["status"] == "failed"
    error = delivered_error(receiver, custom_id)
    assert error is not None and error["code"] == "submission_failed"
    batch = await only_batch(app)
    assert (batch["status"], batch["error"]["code"]) == ("failed", "submission_failed")
    return batch, error


async def only_batch(app: RunningApp) -> dict[str, Any]:
    [batch] = await batches(app)
    return batch


async def batch_in(app: RunningApp, status: str) -> dict[str, Any]:
    """Wait until the (only) batch is in `status`; returns it."""

    async def there() -> bool:
        listed = await batches(app)
        return len(listed) == 1 and listed[0]["status"] == status

    await wait_until(there, timeout=20, what=f"the batch {status}")
    return await only_batch(app)


def delivered_error(receiver: WebhookReceiver, custom_id: str) -> dict[str, Any] | None:
    return receiver.by_custom_id()[custom_id][-1].json["error"]


def polls_of(api: OpenAIBatchStandin, remote_id: str) -> int:
    return api.calls.count(("GET", f"/v1/batches/{remote_id}"))


async def more_polls(api: OpenAIBatchStandin, remote_id: str, how_many: int) -> None:
    """Wait until the app has polled the remote batch `how_many` more times."""
    target = polls_of(api, remote_id) + how_many
    await wait_until(
        lambda: _at_least(polls_of(api, remote_id), target), timeout=20, what=f"{how_many} more polls"
    )


async def _at_least(value: int, target: int) -> bool:
    return value >= target


async def batch_row(app: RunningApp, batch_id: int) -> Batch:
    async with app.db.transaction() as session:
        batch = await session.get(Batch, batch_id)
        assert batch is not None
        session.expunge(batch)
        return batch


async def set_status_changed_at(app: RunningApp, batch_id: int, ago: timedelta) -> None:
    async with app.db.transaction() as session:
        await session.execute(
            update(Batch).where(Batch.id == batch_id).values(status_changed_at=datetime.now(UTC) - ago)
        )


# -- the 6 h grace after expires_at ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("past_expiry", "overdue"),
    [(timedelta(hours=6) - timedelta(minutes=5), False), (timedelta(hours=6, minutes=5), True)],
    ids=["5h55m-past-expiry", "6h05m-past-expiry"],
)
async def test_a_remote_batch_still_running_6h_after_expires_at_fails_remote_overdue(
    database_url: str,
    openai_api: OpenAIBatchStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    past_expiry: timedelta,
    overdue: bool,
) -> None:
    # The stand-in creates the batch with expires_at = its clock + 24 h: set its clock back so that
    # expires_at lies `past_expiry` before the app's real now. It stays validating meanwhile.
    shift = 24 * HOUR + past_expiry.total_seconds()
    openai_api.clock = lambda: time.time() - shift
    openai_api.polls_per_status = 1000
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "od/1")
        if overdue:
            details = await finished(app, "od/1")
            assert details["od/1"]["status"] == "failed"
            error = delivered_error(receiver, "od/1")
            assert error is not None and error["code"] == "remote_overdue"
            assert error["message"] == "OpenAI still reports validating long after expiry"
            batch = await only_batch(app)
            assert batch["status"] == "failed"
            assert batch["error"]["code"] == "remote_overdue"
            return
        batch = await batch_in(app, "processing")
        remote_id = batch["remote"]["batch_id"]
        await more_polls(openai_api, remote_id, 5)
        batch = await only_batch(app)
        assert batch["status"] == "processing" and batch["error"] is None
        openai_api.polls_per_status = 0  # it finishes normally: the grace was not over
        details = await finished(app, "od/1")
        assert details["od/1"]["status"] == "succeeded"


# -- the 1 h cap on a remote cancel ---------------------------------------------------------------


async def test_a_remote_cancel_unfinished_after_1h_is_ended_locally(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000
    openai_api.cancelling_polls = 10**6  # OpenAI never finishes cancelling
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "cc/1", "cc/2")
        batch = await batch_in(app, "processing")
        remote_id = batch["remote"]["batch_id"]
        answer = await app.client.post(f"/api/batches/{batch['id']}/cancel")
        assert answer.status_code == 202 and answer.json()["status"] == "cancelling"

        async def remote_cancelling() -> bool:
            return openai_api.batches[remote_id]["status"] == "cancelling"

        await wait_until(remote_cancelling, timeout=20, what="the remote cancel requested")
        # 59 minutes in: still waiting for OpenAI.
        await set_status_changed_at(app, batch["id"], timedelta(minutes=59))
        await more_polls(openai_api, remote_id, 3)
        assert (await only_batch(app))["status"] == "cancelling"
        # 61 minutes in: ended locally, without OpenAI's word.
        await set_status_changed_at(app, batch["id"], timedelta(minutes=61))
        details = await finished(app, "cc/1", "cc/2")
        assert {d["status"] for d in details.values()} == {"cancelled"}
        batch = await only_batch(app)
        assert batch["status"] == "cancelled"
        assert "the remote cancel did not finish within 1:00:00; 2 requests cancelled" in reasons(batch)
        assert delivered_error(receiver, "cc/1") == {
            "code": "cancelled",
            "message": "the batch was cancelled (the remote cancel did not finish within 1:00:00)",
        }
        assert openai_api.batches[remote_id]["status"] == "cancelling"
        assert openai_api.calls.count(("POST", f"/v1/batches/{remote_id}/cancel")) == 1


# -- cancel answered 409, a failing cancel, a batch failed while cancelling ------------------------


async def cancel_while_validating(app: RunningApp) -> str:
    """Get the batch processing (held in validating), cancel it; returns the remote id."""
    batch = await batch_in(app, "processing")
    answer = await app.client.post(f"/api/batches/{batch['id']}/cancel")
    assert answer.status_code == 202 and answer.json()["status"] == "cancelling"
    return str(batch["remote"]["batch_id"])


async def cancel_calls(api: OpenAIBatchStandin, remote_id: str, count: int) -> None:
    async def sent() -> bool:
        return api.calls.count(("POST", f"/v1/batches/{remote_id}/cancel")) >= count

    await wait_until(sent, timeout=20, what=f"{count} cancel calls")


async def test_a_cancel_answered_409_collects_the_results_as_usual(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000
    openai_api.fail_matching = {r"POST /v1/batches/[^/]+/cancel": [409]}  # it finished first
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "c409/1", "c409/2")
        remote_id = await cancel_while_validating(app)
        await cancel_calls(openai_api, remote_id, 1)
        openai_api.polls_per_status = 0  # the remote batch completes
        details = await finished(app, "c409/1", "c409/2")
        assert {d["status"] for d in details.values()} == {"succeeded"}
        batch = await only_batch(app)
        assert batch["status"] == "done"
        moves = [e["to_status"] for e in batch["events"] if e["from_status"] != e["to_status"]]
        assert moves[-3:] == ["cancelling", "collecting", "done"]
        # The 409 counts as sent: the cancel is not repeated.
        assert openai_api.calls.count(("POST", f"/v1/batches/{remote_id}/cancel")) == 1
        assert (await batch_row(app, batch["id"])).cancel_sent is True


async def test_a_failed_cancel_call_is_retried_on_the_next_poll(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000
    openai_api.fail_matching = {r"POST /v1/batches/[^/]+/cancel": [500]}
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "cf/1")
        remote_id = await cancel_while_validating(app)
        details = await finished(app, "cf/1")
        assert details["cf/1"]["status"] == "cancelled"
        assert delivered_error(receiver, "cf/1")["code"] == "cancelled"  # type: ignore[index]
        batch = await only_batch(app)
        assert batch["status"] == "cancelled"
        assert "talking to OpenAI failed" in reasons(batch) and "try 2 of 8" in reasons(batch)
        assert openai_api.calls.count(("POST", f"/v1/batches/{remote_id}/cancel")) == 2
        assert openai_api.batches[remote_id]["status"] == "cancelled"


async def test_a_batch_openai_fails_while_cancelling_ends_cancelled(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000
    openai_api.next_batches = [{"error_code": "too_many_tasks"}]
    openai_api.fail_matching = {r"POST /v1/batches/[^/]+/cancel": [409]}
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "cx/1", "cx/2")
        remote_id = await cancel_while_validating(app)
        await cancel_calls(openai_api, remote_id, 1)
        openai_api.polls_per_status = 0  # validation fails: OpenAI reports failed
        details = await finished(app, "cx/1", "cx/2")
        assert {d["status"] for d in details.values()} == {"cancelled"}
        assert openai_api.batches[remote_id]["status"] == "failed"
        batch = await only_batch(app)
        assert batch["status"] == "cancelled"
        assert "OpenAI failed it while cancelling" in reasons(batch)
        assert batch["error"]["code"] == "batch_failed"
        assert "too_many_tasks" in delivered_error(receiver, "cx/1")["message"]  # type: ignore[index]


# -- refusals: 403 like 401, and a 4xx on batch creation ------------------------------------------


async def test_403_on_submission_stops_submitting_like_401_without_using_an_attempt(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.forbidden = True
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "f403/1")

        async def blocked() -> bool:
            listed = await batches(app)
            return bool(listed) and "(403)" in (listed[0]["wait_reason"] or "")

        await wait_until(blocked, timeout=20, what="the batch waits on the refused key")
        batch = await only_batch(app)
        assert batch["status"] == "ready"
        assert batch["wait_reason"].startswith(
            "submission stopped for all batches: OpenAI refused the API key (403)"
        )
        assert (await batch_row(app, batch["id"])).run_failures == 0
        health = await app.client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        [openai] = [b for b in health.json()["backends"] if b["name"] == "openai"]
        assert not openai["reachable"] and "403" in openai["detail"]

        async def probed_again() -> bool:
            return openai_api.calls.count(("GET", "/v1/models")) >= 2

        await wait_until(probed_again, timeout=20, what="the gate re-probes the key")
        assert openai_api.calls.count(("POST", "/v1/files")) == 1

        openai_api.forbidden = False
        details = await finished(app, "f403/1")
        assert details["f403/1"]["status"] == "succeeded"
        health = await app.client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"


async def test_403_while_polling_pauses_polling_without_counting_a_failure(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "p403/1")
        batch = await batch_in(app, "processing")
        openai_api.forbidden = True

        async def refused() -> bool:
            return (await app.client.get("/health")).json()["status"] == "degraded"

        await wait_until(refused, timeout=20, what="the gate shut by a 403 on polling")

        async def probed_twice() -> bool:
            return openai_api.calls.count(("GET", "/v1/models")) >= 2

        await wait_until(probed_twice, timeout=20, what="the gate re-probes the key")
        row = await batch_row(app, batch["id"])
        assert (row.status, row.run_failures, row.error) == ("processing", 0, None)
        openai_api.forbidden = False
        openai_api.polls_per_status = 0
        details = await finished(app, "p403/1")
        assert details["p403/1"]["status"] == "succeeded"


async def test_a_4xx_on_batch_creation_fails_the_submission_at_once(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.endpoints = ("/v1/embeddings",)  # POST /v1/batches answers 400 invalid_value
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=5)) as app:
        await submit(app, receiver, "s400/1")
        batch, error = await submission_failed(app, receiver, "s400/1")
        assert "answered 400" in error["message"]
        assert "submission failed refused: POST /batches answered 400" in reasons(batch)
        # Neither the call nor the submission is tried again; the uploaded input file is deleted.
        assert openai_api.calls.count(("POST", "/v1/batches")) == 1
        assert openai_api.calls.count(("POST", "/v1/files")) == 1
        [upload] = openai_api.uploads

        async def input_deleted() -> bool:
            return upload["file_id"] in openai_api.deleted_files

        await wait_until(input_deleted, timeout=10, what="the refused batch's input file deleted")


# -- the late output_file_id: polled again 10 times ---------------------------------------------


@pytest.mark.parametrize("late_polls", [10, 11])
async def test_a_completed_batch_without_its_output_file_is_polled_again_10_times(
    database_url: str,
    openai_api: OpenAIBatchStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    late_polls: int,
) -> None:
    # The stand-in completes on the first poll and hides the file ids for `late_polls` polls.
    openai_api.next_batches = [{"late_output_polls": late_polls}]
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "lo/1", "lo/2")
        details = await finished(app, "lo/1", "lo/2")
        assert {d["status"] for d in details.values()} == {"succeeded"}
        first_remote = next(iter(openai_api.batches))
        assert polls_of(openai_api, first_remote) == 1 + 10  # the poll that saw completed, then 10
        listed = await batches(app)
        if late_polls == 10:  # the 11th poll shows the file: collected
            [batch] = listed
            assert (batch["status"], batch["completed_count"]) == ("done", 2)
            assert len(openai_api.created) == 1
        else:  # read as it is after 10: no lines, so both requests go to a new batch
            first, second = listed
            assert first["status"] == "done" and first["completed_count"] == 0
            assert "2 resubmitted in a new batch" in reasons(first)
            assert (second["status"], second["completed_count"]) == ("done", 2)
            assert len(openai_api.created) == 2


# -- the README's limits, as literals ---------------------------------------------------------------


async def test_submission_is_tried_3_times_then_fails_with_submission_failed(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.fail_next = [503] * 100  # every upload fails; no call retries (OPENAI_MAX_RETRIES=0)
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "sub/1")
        batch, _ = await submission_failed(app, receiver, "sub/1")
        assert "attempt 2 of 3" in reasons(batch) and "attempt 3 of 3" in reasons(batch)
        assert "submission failed after 3 attempts" in reasons(batch)
        assert openai_api.calls.count(("POST", "/v1/files")) == 3
        assert openai_api.calls.count(("POST", "/v1/batches")) == 0


async def test_polling_gives_up_after_8_consecutive_failures_with_remote_unreachable(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000
    async with start_app(polling_settings(database_url, openai_api)) as app:
        remote_id = await remote_batch_processing(app, receiver, "poll/1")
        await more_polls(openai_api, remote_id, 2)  # successful polls first: the count starts at 0
        start = len(openai_api.calls)
        openai_api.fail_next = [500] * 1000
        details = await finished(app, "poll/1")
        assert details["poll/1"]["status"] == "failed"
        error = delivered_error(receiver, "poll/1")
        assert error is not None and error["code"] == "remote_unreachable"
        failed_polls = openai_api.calls[start:].count(("GET", f"/v1/batches/{remote_id}"))
        assert failed_polls == 8
        batch = await only_batch(app)
        assert batch["status"] == "failed" and batch["error"]["code"] == "remote_unreachable"
        assert "gave up after 8 failures" in reasons(batch)
        assert "try 8 of 8" in reasons(batch) and "try 9 of 8" not in reasons(batch)


async def test_a_successful_poll_resets_the_failure_count(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000
    async with start_app(polling_settings(database_url, openai_api)) as app:
        remote_id = await remote_batch_processing(app, receiver, "reset/1")
        openai_api.fail_matching = {rf"GET /v1/batches/{remote_id}": [500] * 7}  # 7, then a success

        async def failures_spent() -> bool:
            return not openai_api.fail_matching[rf"GET /v1/batches/{remote_id}"]

        await wait_until(failures_spent, timeout=20, what="7 failed polls")
        await more_polls(openai_api, remote_id, 1)
        openai_api.fail_matching = {rf"GET /v1/batches/{remote_id}": [500] * 7}  # 7 more: 14 in all

        await wait_until(failures_spent, timeout=20, what="7 more failed polls")
        await more_polls(openai_api, remote_id, 1)
        row = await batch_row(app, (await only_batch(app))["id"])
        assert (row.status, row.error) == ("processing", None)
        openai_api.polls_per_status = 0
        details = await finished(app, "reset/1")
        assert details["reset/1"]["status"] == "succeeded"
