"""The OpenAI backend against the stand-in Batch API, cancelling and cleaning up: remote and
operator cancels keep what finished, a retry uploads again, and the remote files are deleted,
with retries, when their batch is; each on SQLite and PostgreSQL."""

from __future__ import annotations

from app.ground.steps import Step
from testkit import StartApp, wait_until
from testkit.openai import (
    batches,
    delivered_bodies,
    finished,
    openai_settings,
    reasons,
    remote_files_deleted,
    submit,
)
from testkit.standins.asgi import Relay, Scope
from testkit.standins.openai_batch import OpenAIBatchStandin
from testkit.standins.receiver import WebhookReceiver


async def test_remote_cancel_keeps_partial_output_and_cancels_the_rest(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.next_batches = [{"cancel_after": 1}]
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "x/1", "x/2", "x/3")
        details = await finished(app, "x/1", "x/2", "x/3")
        assert [details[c]["status"] for c in ("x/1", "x/2", "x/3")] == [
            "succeeded",
            "cancelled",
            "cancelled",
        ]
        assert delivered_bodies(receiver)["x/3"]["error"]["code"] == "cancelled"
        [batch] = await batches(app)
        assert batch["status"] == "cancelled" and "2 cancelled" in reasons(batch)


async def test_operator_cancel_cancels_remotely_and_collects_what_finished(
    database_url: str,
    openai_api: OpenAIBatchStandin,
    openai_relay: Relay,
    receiver: WebhookReceiver,
    start_app: StartApp,
) -> None:
    openai_api.polls_per_status = 1  # one poll shows validating, the next in_progress ...
    openai_api.cancel_partial_lines = 1

    def hold_in_progress(scope: Scope) -> None:
        # ... where the remote batch stays (validated), so the cancel lands mid-run.
        if any(b["status"] == "in_progress" for b in openai_api.batches.values()):
            openai_api.polls_per_status = 1000

    openai_relay.after.append(hold_in_progress)
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "oc/1", "oc/2")

        async def in_progress() -> bool:
            listed = await batches(app)
            return (
                bool(listed)
                and listed[0]["status"] == "processing"
                and listed[0]["remote"]["status"] == "in_progress"
            )

        await wait_until(in_progress, timeout=10, what="batch processing, in_progress at OpenAI")
        [batch] = await batches(app)
        answer = await app.client.post(f"/api/batches/{batch['id']}/cancel")
        assert answer.status_code == 202 and answer.json()["status"] == "cancelling"
        details = await finished(app, "oc/1", "oc/2")
        assert (details["oc/1"]["status"], details["oc/2"]["status"]) == ("succeeded", "cancelled")
        assert ("POST", f"/v1/batches/{batch['remote']['batch_id']}/cancel") in openai_api.calls
        [batch] = await batches(app)
        assert batch["status"] == "cancelled"


async def test_operator_cancel_tolerates_a_remote_batch_that_is_gone(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "g/1")

        async def processing() -> bool:
            listed = await batches(app)
            return bool(listed) and listed[0]["status"] == "processing"

        await wait_until(processing, timeout=10, what="batch processing")
        openai_api.batches.clear()  # the remote batch vanished: cancel and poll answer 404
        [batch] = await batches(app)
        assert (await app.client.post(f"/api/batches/{batch['id']}/cancel")).status_code == 202
        details = await finished(app, "g/1")
        assert details["g/1"]["status"] == "cancelled"
        [batch] = await batches(app)
        assert batch["status"] == "cancelled" and "404" in reasons(batch)


async def test_retry_of_a_failed_batch_uploads_again(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.next_batches = [{"error_code": "too_many_tasks"}]
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "rt/1")
        details = await finished(app, "rt/1")
        assert details["rt/1"]["status"] == "failed"
        assert delivered_bodies(receiver)["rt/1"]["error"]["code"] == "too_many_tasks"
        [batch] = await batches(app)
        assert (await app.client.post(f"/api/batches/{batch['id']}/retry")).status_code == 202

        async def succeeded() -> bool:
            detail = (await app.client.get("/api/requests/rt/1")).json()
            return detail["status"] == "succeeded"

        await wait_until(succeeded, timeout=20, what="retried request succeeded")
        assert len(openai_api.uploads) == 2
        assert openai_api.uploads[0]["file_id"] in openai_api.deleted_files


async def test_delete_removes_the_remote_files(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    settings = openai_settings(database_url, openai_api, openai_delete_files=False)
    async with start_app(settings) as app:
        await submit(app, receiver, "d/1")
        await finished(app, "d/1")
        [batch] = await batches(app)
        assert openai_api.deleted_files == []
        assert (await app.client.delete(f"/api/batches/{batch['id']}")).status_code == 200
        remote = batch["remote"]
        assert set(openai_api.deleted_files) == {remote["input_file_id"], remote["output_file_id"]}


async def test_a_failed_file_delete_is_retried_with_backoff_until_it_works(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # Both deletes of the batch's end fail (no HTTP retries): before issue 25 they were never tried again.
    openai_api.fail_matching = {r"DELETE /v1/files/.+": [500, 500]}
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "del/1")
        await finished(app, "del/1")
        [batch] = await batches(app)
        await wait_until(
            lambda: remote_files_deleted(app, batch["id"]), timeout=10, what="files deleted on a retry"
        )
        batch = (await app.client.get(f"/api/batches/{batch['id']}")).json()
        assert batch["remote"]["files_delete_attempts"] == 1 and batch["remote"]["files_delete_error"] is None
        assert "could not delete its OpenAI files (attempt 1 of 5" in reasons(batch)
        assert set(openai_api.deleted_files) == {
            batch["remote"]["input_file_id"],
            batch["remote"]["output_file_id"],
        }


async def test_a_file_delete_that_keeps_failing_stops_after_its_attempts_visibly(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.fail_matching = {r"DELETE /v1/files/.+": [500] * 100}
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "keep/1")
        await finished(app, "keep/1")
        [batch] = await batches(app)

        async def given_up() -> bool:
            got = (await app.client.get(f"/api/batches/{batch['id']}")).json()
            return "gave up deleting its OpenAI files" in reasons(got)

        await wait_until(given_up, timeout=15, what="the deletes to stop after their attempts")
        deletes = [call for call in openai_api.calls if call[0] == "DELETE"]
        batch = (await app.client.get(f"/api/batches/{batch['id']}")).json()
        remote = batch["remote"]
        assert remote["files_delete_attempts"] == 5 and remote["files_deleted_at"] is None
        assert "500" in remote["files_delete_error"] or "error" in remote["files_delete_error"]
        assert len(deletes) == 5 * 2  # input and output file, 5 attempts each
        # Bounded: a later poll round tries nothing more.
        await app.worker.steps[Step.POLL].run_once()
        assert len([call for call in openai_api.calls if call[0] == "DELETE"]) == len(deletes)
