"""The OpenAI backend end to end against the stand-in Batch API: one test per branch of the
lifecycle, each on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db.models import Request
from app.ground.steps import Step
from testkit import RunningApp, StartApp, request_payload, wait_until
from testkit.openai import (
    MODEL,
    batches,
    delivered_bodies,
    finished,
    openai_settings,
    reasons,
    submit,
)
from testkit.standins.asgi import Relay, Scope
from testkit.standins.openai_batch import OpenAIBatchStandin
from testkit.standins.receiver import WebhookReceiver


async def test_requests_are_uploaded_polled_collected_and_delivered(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1
    openai_api.reverse_output = True  # lines come in any order: matched on custom_id
    settings = openai_settings(database_url, openai_api, openai_organization="org-1", openai_project="proj-1")
    async with start_app(settings) as app:
        await submit(app, receiver, "ok/1", "ok/2", "ok/3")
        details = await finished(app, "ok/1", "ok/2", "ok/3")
        assert {d["status"] for d in details.values()} == {"succeeded"}
        body = delivered_bodies(receiver)["ok/2"]
        assert body["response"]["status_code"] == 200
        assert body["response"]["body"]["choices"][0]["message"]["content"] == "echo: ok/2"

        [batch] = await batches(app)
        await wait_until(
            lambda: _files_deleted(app, batch["id"]), timeout=10, what="remote files deleted after collection"
        )
        batch = (await app.client.get(f"/api/batches/{batch['id']}")).json()
        assert batch["status"] == "done"
        assert batch["remote"]["status"] == "completed"
        assert [e["to_status"] for e in batch["events"] if e["from_status"] != e["to_status"]] == [
            "building",
            "ready",
            "submitting",
            "processing",
            "collecting",
            "done",
        ]
        assert "OpenAI: in_progress" in reasons(batch) and "OpenAI: finalizing" in reasons(batch)
        # Usage from the batch object, and the saving at gpt-4o-mini's list prices.
        assert batch["usage"]["input_tokens"] > 0 and batch["usage"]["output_tokens"] > 0
        assert batch["cost"]["priced_as"] == MODEL
        assert batch["cost"]["saving_usd"] == pytest.approx(batch["cost"]["synchronous_usd"] / 2)
        page = (await app.client.get(f"/batches/{batch['id']}")).text
        assert "Saved" in page and f"{batch['usage']['input_tokens']:,}" in page
        assert "deleted" in page and batch["remote"]["batch_id"] in page

        [created] = openai_api.created
        assert created["completion_window"] == "24h"
        assert created["endpoint"] == "/v1/chat/completions"
        # The submission key is how a create whose answer was lost is found again.
        key = {"batchgate_submission_key": batch["remote"]["submission_key"]}
        assert created["metadata"] == {"batchgate_batch_id": str(batch["id"]), **key}
        [upload] = openai_api.uploads
        assert upload["filename"] == f"batchgate-batch-{batch['id']}.jsonl"
        assert [cid for _, cid in openai_api.executed] == ["ok/1", "ok/2", "ok/3"]
        assert set(openai_api.deleted_files) == {
            batch["remote"]["input_file_id"],
            batch["remote"]["output_file_id"],
        }
        headers = openai_api.call_headers[0]
        assert headers["authorization"] == "Bearer sk-test"
        assert (headers["openai-organization"], headers["openai-project"]) == ("org-1", "proj-1")
        assert len(receiver.successes()) == 3


async def test_collecting_again_after_an_interrupted_collection_changes_nothing(
    database_url: str,
    openai_api: OpenAIBatchStandin,
    openai_relay: Relay,
    receiver: WebhookReceiver,
    start_app: StartApp,
) -> None:
    """The output file's lines are applied, then reading the error file fails: the whole collection
    runs again later, and applying the same lines again changes nothing."""
    openai_api.line_statuses = {"ca/3": [400]}  # its line goes to the error file, read second
    interrupted: list[str] = []

    def fail_the_first_error_file_read(scope: Scope) -> None:
        error_files = {b["error_file_id"] for b in openai_api.batches.values()} - {None}
        for file_id in error_files:
            if scope["path"] == f"/v1/files/{file_id}/content" and not interrupted:
                interrupted.append(file_id)
                openai_api.fail_next = [500]  # this very request answers 500

    openai_relay.before.append(fail_the_first_error_file_read)
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "ca/1", "ca/2", "ca/3")
        details = await finished(app, "ca/1", "ca/2", "ca/3")
        assert interrupted, "the error file was never read"
        assert [details[c]["status"] for c in ("ca/1", "ca/2", "ca/3")] == [
            "succeeded",
            "succeeded",
            "failed",
        ]
        [batch] = await batches(app)
        assert "talking to OpenAI failed" in reasons(batch)
        output_reads = openai_api.calls.count(
            ("GET", f"/v1/files/{batch['remote']['output_file_id']}/content")
        )
        assert output_reads == 2  # the output file was read, and applied, twice
        # ... and its lines counted and delivered once, with nothing resubmitted.
        assert (batch["status"], batch["completed_count"], batch["failed_count"]) == ("done", 2, 1)
        assert sorted(r.custom_id for r in receiver.successes()) == ["ca/1", "ca/2", "ca/3"]
        assert len(openai_api.created) == 1


async def _files_deleted(app: RunningApp, batch_id: int) -> bool:
    batch = (await app.client.get(f"/api/batches/{batch_id}")).json()
    return batch["remote"]["files_deleted_at"] is not None


async def test_validation_failure_fails_the_named_lines_and_resubmits_the_rest(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.next_batches = [{"fail_validation": {"v/2": "invalid_json_line"}}]
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "v/1", "v/2", "v/3")
        details = await finished(app, "v/1", "v/2", "v/3")
        assert details["v/2"]["status"] == "failed"
        error = delivered_bodies(receiver)["v/2"]["error"]
        assert error["code"] == "invalid_json_line" and error["line"] == 2
        assert details["v/1"]["status"] == details["v/3"]["status"] == "succeeded"
        first, second = await batches(app)
        assert first["status"] == "failed"
        assert "invalid_json_line" in first["error"]["message"]
        assert "2 others resubmitted" in reasons(first)
        assert second["status"] == "done" and second["completed_count"] == 2


async def test_expired_batch_keeps_finished_lines_and_resubmits_the_rest(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.next_batches = [{"expire_after": 1}]
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "e/1", "e/2", "e/3")
        details = await finished(app, "e/1", "e/2", "e/3")
        assert {d["status"] for d in details.values()} == {"succeeded"}
        first, second = await batches(app)
        assert first["status"] == "expired" and first["completed_count"] == 1
        assert "2 resubmitted" in reasons(first)
        assert second["status"] == "done" and second["completed_count"] == 2
        # Each line ran once where it finished: e/1 in the first batch only.
        assert [cid for _, cid in openai_api.executed].count("e/1") == 1


async def test_a_4xx_line_fails_by_its_status_code_though_error_is_null(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.line_statuses = {"c/2": [400]}
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "c/1", "c/2")
        details = await finished(app, "c/1", "c/2")
        assert details["c/1"]["status"] == "succeeded"
        assert details["c/2"]["status"] == "failed"
        delivered = delivered_bodies(receiver)["c/2"]
        assert delivered["response"]["status_code"] == 400
        assert delivered["error"]["message"]
        [batch] = await batches(app)
        assert (batch["status"], batch["completed_count"], batch["failed_count"]) == ("done", 1, 1)
        assert [cid for _, cid in openai_api.executed].count("c/2") == 1  # not resubmitted


async def test_a_result_line_the_database_refuses_fails_only_its_own_request(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # Issue 13 item 5: a token count no column holds, on one line of the output file.
    openai_api.usage_for["u/2"] = {"prompt_tokens": 2**63, "completion_tokens": 1, "total_tokens": 2**63}
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "u/1", "u/2", "u/3")
        details = await finished(app, "u/1", "u/2", "u/3")
        assert [details[c]["status"] for c in ("u/1", "u/2", "u/3")] == ["succeeded", "failed", "succeeded"]
        assert delivered_bodies(receiver)["u/2"]["error"]["code"] == "result_not_stored"
        [batch] = await batches(app)
        assert (batch["status"], batch["completed_count"], batch["failed_count"]) == ("done", 2, 1)
        assert len(openai_api.created) == 1  # collected once: nothing paid for twice


async def test_5xx_lines_are_resubmitted_up_to_the_limit_then_fail(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.line_statuses = {"s/1": [500], "s/2": [500] * 10}
    async with start_app(openai_settings(database_url, openai_api, openai_resubmit_max=2)) as app:
        await submit(app, receiver, "s/1", "s/2")
        details = await finished(app, "s/1", "s/2")
        assert details["s/1"]["status"] == "succeeded"
        assert details["s/2"]["status"] == "failed"
        assert "after 2 resubmissions" in delivered_bodies(receiver)["s/2"]["error"]["message"]
        ran = [cid for _, cid in openai_api.executed]
        assert (ran.count("s/1"), ran.count("s/2")) == (2, 3)


async def test_completed_batch_without_output_file_reads_the_error_file(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.line_statuses = {"n/1": [422], "n/2": [404]}
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "n/1", "n/2")
        details = await finished(app, "n/1", "n/2")
        assert {d["status"] for d in details.values()} == {"failed"}
        [remote] = openai_api.batches.values()
        assert remote["output_file_id"] is None and remote["error_file_id"]
        [batch] = await batches(app)
        assert (batch["status"], batch["failed_count"]) == ("done", 2)


async def test_a_late_output_file_id_is_polled_for_instead_of_losing_results(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.next_batches = [{"late_output_polls": 3}]
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "l/1", "l/2")
        details = await finished(app, "l/1", "l/2")
        assert {d["status"] for d in details.values()} == {"succeeded"}
        [batch] = await batches(app)
        assert batch["status"] == "done" and batch["completed_count"] == 2
        assert len(openai_api.executed) == 2  # nothing was resubmitted


async def test_429_then_success(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.fail_next = [429, 429]
    openai_api.retry_after = "0"
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "r/1")
        details = await finished(app, "r/1")
        assert details["r/1"]["status"] == "succeeded"
        assert openai_api.calls[:3] == [("POST", "/v1/files")] * 3


async def test_api_errors_are_retried_a_bounded_number_of_times_then_the_batch_fails(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.fail_next = [503] * 100
    settings = openai_settings(database_url, openai_api, openai_max_retries=1, openai_poll_seconds=0.01)
    async with start_app(settings) as app:
        await submit(app, receiver, "u/1")
        details = await finished(app, "u/1")
        assert details["u/1"]["status"] == "failed"
        assert delivered_bodies(receiver)["u/1"]["error"]["code"] == "submission_failed"
        [batch] = await batches(app)
        assert batch["status"] == "failed"
        assert "after 3 attempts" in reasons(batch)  # README: submission is tried 3 times
        # 3 submissions, each one call plus one retry.
        assert openai_api.calls.count(("POST", "/v1/files")) == 3 * 2


async def test_polling_gives_up_after_bounded_failures(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000
    settings = openai_settings(database_url, openai_api, openai_max_retries=0, openai_poll_seconds=0.01)
    async with start_app(settings) as app:
        await submit(app, receiver, "p/1")

        async def processing() -> bool:
            return bool(openai_api.batches)

        await wait_until(processing, timeout=10, what="remote batch created")
        openai_api.fail_next = [500] * 1000
        details = await finished(app, "p/1")
        assert details["p/1"]["status"] == "failed"
        assert delivered_bodies(receiver)["p/1"]["error"]["code"] == "remote_unreachable"
        [batch] = await batches(app)
        assert batch["status"] == "failed"
        assert "gave up after 8 failures" in reasons(batch)  # README: 8 consecutive failures


async def test_401_stops_submission_visibly_until_the_key_works(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.required_api_key = "sk-other"
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "k/1")

        async def blocked() -> bool:
            listed = await batches(app)
            return bool(listed) and "401" in (listed[0]["wait_reason"] or "")

        await wait_until(blocked, timeout=10, what="the batch waits on the refused key")
        health = (await app.client.get("/health")).json()
        assert health["status"] == "degraded"
        [openai] = [b for b in health["backends"] if b["name"] == "openai"]
        assert not openai["reachable"] and "401" in openai["detail"]
        dashboard = (await app.client.get("/")).text
        assert "refused the API key (401)" in dashboard

        # While refused, only the cheap key probe goes out, never another upload.
        async def probed_again() -> bool:
            return openai_api.calls.count(("GET", "/v1/models")) >= 2

        await wait_until(probed_again, timeout=10, what="the gate re-probes the key")
        assert openai_api.calls.count(("POST", "/v1/files")) == 1

        openai_api.required_api_key = "sk-test"
        details = await finished(app, "k/1")
        assert details["k/1"]["status"] == "succeeded"
        assert (await app.client.get("/health")).json()["status"] == "ok"


async def test_token_limit_exceeded_backs_off_then_succeeds(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.next_batches = [{"error_code": "token_limit_exceeded"}] * 2
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "t/1", "t/2")
        details = await finished(app, "t/1", "t/2")
        assert {d["status"] for d in details.values()} == {"succeeded"}
        [batch] = await batches(app)  # the same batch went again, not a new one
        assert batch["status"] == "done"
        assert "retry 1 of 5" in reasons(batch) and "retry 2 of 5" in reasons(batch)
        assert len(openai_api.created) == 3

        async def inputs_deleted() -> bool:  # the refused uploads too, not only the last one
            return {u["file_id"] for u in openai_api.uploads} <= set(openai_api.deleted_files)

        await wait_until(inputs_deleted, timeout=10, what="every uploaded input file deleted")


async def test_token_limit_exceeded_fails_after_its_retries(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.next_batches = [{"error_code": "token_limit_exceeded"}] * 10
    settings = openai_settings(database_url, openai_api, openai_token_limit_retries=2)
    async with start_app(settings) as app:
        await submit(app, receiver, "tf/1")
        details = await finished(app, "tf/1")
        assert details["tf/1"]["status"] == "failed"
        assert delivered_bodies(receiver)["tf/1"]["error"]["code"] == "token_limit_exceeded"
        assert len(openai_api.created) == 3


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


async def test_malformed_output_line_is_skipped_and_its_request_resubmitted(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.next_batches = [{"malformed": ["m/2"]}]
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "m/1", "m/2")
        details = await finished(app, "m/1", "m/2")
        assert {d["status"] for d in details.values()} == {"succeeded"}
        first, second = await batches(app)
        assert "1 malformed output lines skipped" in reasons(first)
        assert second["completed_count"] == 1


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


async def test_a_batch_waits_for_token_capacity_oldest_first(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.polls_per_status = 1000  # the first batch stays enqueued until released
    settings = openai_settings(
        database_url, openai_api, batch_max_requests=2, openai_token_limits={"gpt-4o": 5, MODEL: 20}
    )
    async with start_app(settings) as app:
        await submit(app, receiver, "q/1", "q/2", "q/3", "q/4")

        async def second_waits() -> bool:
            listed = await batches(app)
            return len(listed) >= 2 and "waiting for capacity" in (listed[1]["wait_reason"] or "")

        await wait_until(second_waits, timeout=10, what="the second batch waits for capacity")
        first, second = (await batches(app))[:2]
        assert first["status"] == "processing" and second["status"] == "ready"
        assert f"operator limit for {MODEL}*" in second["wait_reason"]
        assert "waiting for capacity" in (await app.client.get(f"/batches/{second['id']}")).text
        assert len(openai_api.created) == 1

        openai_api.polls_per_status = 0
        details = await finished(app, "q/1", "q/2", "q/3", "q/4")
        assert {d["status"] for d in details.values()} == {"succeeded"}
        assert len(openai_api.created) == 2


async def test_routing_by_model_pattern_and_per_request_backend(
    database_url: str, openai_api: OpenAIBatchStandin, start_app: StartApp
) -> None:
    settings = openai_settings(
        database_url,
        openai_api,
        default_backend="local",
        backend_routes="gpt-*=openai,o*=openai,*=local",
        scheduler_enabled=False,
    )
    async with start_app(settings) as app:
        for custom_id, model, backend in (
            ("rt/gpt", "gpt-4o", None),
            ("rt/o3", "o3-mini", None),
            ("rt/llama", "llama3", None),
            ("rt/forced", "gpt-4o", "local"),
        ):
            payload = request_payload(custom_id, {"type": "none"}, model=model)
            if backend:
                payload["backend"] = backend
            assert (await app.client.post("/api/requests", json=payload)).status_code == 202
        bad = request_payload("rt/bad", {"type": "none"})
        bad["backend"] = "mainframe"
        answer = await app.client.post("/api/requests", json=bad)
        assert answer.status_code == 422 and answer.json()["errors"][0]["code"] == "invalid_backend"
        async with app.db.transaction() as session:
            rows = dict((await session.execute(select(Request.custom_id, Request.backend))).all())
        assert rows == {"rt/gpt": "openai", "rt/o3": "openai", "rt/llama": "local", "rt/forced": "local"}


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
            lambda: _files_deleted(app, batch["id"]), timeout=10, what="files deleted on a retry"
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
