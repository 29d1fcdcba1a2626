"""The OpenAI backend end to end against the stand-in Batch API, what comes back: results uploaded,
polled, collected and delivered, and every way a line can fail or go missing; each on SQLite and
PostgreSQL."""

from __future__ import annotations

import pytest

from testkit import StartApp, wait_until
from testkit.openai import (
    MODEL,
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
            lambda: remote_files_deleted(app, batch["id"]),
            timeout=10,
            what="remote files deleted after collection",
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
