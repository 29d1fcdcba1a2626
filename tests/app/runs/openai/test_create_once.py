"""An OpenAI batch is created once (issue 13, defect 3): a create whose answer was lost, or that a
crash or a database failure kept from being recorded, is found again by the submission key in its
metadata and followed, never created (and paid for) a second time. Faults happen for real: the
stand-in creates the batch and loses the answer, a process's lease passes to a dead owner,
PostgreSQL goes away behind a TCP proxy."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from app.core.runs.openai.once import BATCH_ID_KEY, SUBMISSION_KEY
from testkit import StartApp, migrate, postgres_database, wait_until
from testkit.faults import kill_submission
from testkit.openai import batches, finished, openai_settings, reasons, submit
from testkit.standins.openai_batch import OpenAIBatchStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.tcp_proxy import TcpProxy

IDS = ("once/1", "once/2")


async def followed_once(
    app: Any, api: OpenAIBatchStandin, receiver: WebhookReceiver, *custom_ids: str
) -> dict[str, Any]:
    """Every request succeeded through the one remote batch, ran once at OpenAI and was
    delivered once; returns the (only) batch."""
    details = await finished(app, *custom_ids)
    assert {d["status"] for d in details.values()} == {"succeeded"}
    [remote_id] = api.batches  # one remote batch: nothing was created, or paid for, twice
    [batch] = await batches(app)
    assert (batch["status"], batch["remote"]["batch_id"]) == ("done", remote_id)
    assert sorted(cid for _, cid in api.executed) == sorted(custom_ids)
    assert {cid: len(got) for cid, got in receiver.by_custom_id().items()} == dict.fromkeys(custom_ids, 1)
    key = batch["remote"]["submission_key"]
    assert api.batches[remote_id]["metadata"] == {BATCH_ID_KEY: str(batch["id"]), SUBMISSION_KEY: key}
    return batch


async def remote_created(api: OpenAIBatchStandin) -> None:
    await wait_until(lambda: len(api.batches) == 1, timeout=20, what="the remote batch created")


@pytest.mark.parametrize("fault", ["timeout", "disconnect", "500"])
async def test_a_create_whose_answer_is_lost_is_found_and_followed_not_sent_again(
    database_url: str,
    openai_api: OpenAIBatchStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    fault: str,
) -> None:
    openai_api.lost_create_answers = [fault]  # OpenAI creates the batch; its answer never arrives
    settings = openai_settings(database_url, openai_api, openai_timeout_seconds=2)
    async with start_app(settings) as app:
        await submit(app, receiver, *IDS)
        batch = await followed_once(app, openai_api, receiver, *IDS)
        assert "found by its submission key: the create's answer was lost" in reasons(batch)
        assert openai_api.calls.count(("POST", "/v1/batches")) == 1
        assert ("GET", "/v1/batches") in openai_api.calls  # looked for before creating again
        assert len(openai_api.uploads) == 1


@pytest.mark.parametrize(("status", "looked"), [(500, True), (429, False)])
async def test_a_create_that_did_nothing_is_sent_again(
    database_url: str,
    openai_api: OpenAIBatchStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    status: int,
    looked: bool,
) -> None:
    # The create is refused before OpenAI acts: a 5xx may hide a batch, so it is looked for (and
    # not found) first; a 429 says nothing was done, so the create goes again at once.
    openai_api.fail_matching = {"POST /v1/batches": [status]}
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, *IDS)
        await followed_once(app, openai_api, receiver, *IDS)
        creates = [i for i, call in enumerate(openai_api.calls) if call == ("POST", "/v1/batches")]
        assert len(creates) == 2
        between = openai_api.calls[creates[0] : creates[1]]
        assert (("GET", "/v1/batches") in between) is looked
        [created] = openai_api.created  # the refused create never reached the route
        assert re.fullmatch(r"[0-9a-f]{32}", created["metadata"][SUBMISSION_KEY])


async def test_with_no_retries_the_next_attempt_finds_the_batch_even_after_its_last_attempt(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # The create is applied and answers 500; the lookups of the next two attempts fail too. The
    # third failure spends the attempts, but failing then would leave the batch unfollowed: a
    # last round looks once more, finds it and follows it.
    openai_api.lost_create_answers = ["500"]
    openai_api.fail_matching = {"GET /v1/batches": [500, 500]}
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, *IDS)
        batch = await followed_once(app, openai_api, receiver, *IDS)
        assert "attempt 3 of 3" in reasons(batch)
        assert "attempts spent; a last look for the batch its create may have made" in reasons(batch)
        assert "an earlier attempt created it" in reasons(batch) and batch["error"] is None
        assert openai_api.calls.count(("POST", "/v1/batches")) == 1


async def test_a_last_look_that_finds_nothing_fails_the_submission(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.fail_matching = {"POST /v1/batches": [500] * 3}  # refused before OpenAI acts, 3 times
    async with start_app(openai_settings(database_url, openai_api, openai_max_retries=0)) as app:
        await submit(app, receiver, "ll/1")
        details = await finished(app, "ll/1")
        assert details["ll/1"]["status"] == "failed"
        error = receiver.by_custom_id()["ll/1"][-1].json["error"]
        assert error["code"] == "submission_failed" and "answered 500" in error["message"]
        [batch] = await batches(app)
        assert batch["status"] == "failed" and batch["error"] == error
        assert "after 3 attempts and a last look that found no remote batch" in reasons(batch)
        assert openai_api.calls.count(("POST", "/v1/batches")) == 3 and not openai_api.batches
        # Each upload was deleted once a lookup showed no batch used it.
        uploaded = {u["file_id"] for u in openai_api.uploads}
        assert len(uploaded) == 3

        async def inputs_deleted() -> bool:
            return uploaded <= set(openai_api.deleted_files)

        await wait_until(inputs_deleted, timeout=10, what="every uploaded input file deleted")


async def test_a_process_dying_between_create_and_record_is_followed_by_the_next_attempt(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.lost_create_answers = ["timeout"]  # created; the answer waits until the caller is gone
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, *IDS)
        await remote_created(openai_api)
        await kill_submission(app)
        batch = await followed_once(app, openai_api, receiver, *IDS)
        assert "submission interrupted" in reasons(batch)
        assert "found by its submission key" in reasons(batch)
        assert "an earlier attempt created it" in reasons(batch)
        assert openai_api.calls.count(("POST", "/v1/batches")) == 1
        # The input file the remote batch reads was kept for it, not deleted as an orphan.
        assert batch["remote"]["input_file_id"] == openai_api.uploads[0]["file_id"]
        assert len(openai_api.uploads) == 1


@pytest.mark.postgres
async def test_a_database_failure_while_recording_the_remote_batch_is_followed_once_it_is_back(
    openai_api: OpenAIBatchStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    openai_api.lost_create_answers = ["hold"]  # created; the answer waits until released
    caplog.set_level(logging.ERROR, logger="app.core.runs.openai.common")
    async with postgres_database() as direct_url, TcpProxy("127.0.0.1", 5432) as proxy:
        await migrate(direct_url)
        proxied = direct_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        async with start_app(openai_settings(proxied, openai_api)) as app:
            await submit(app, receiver, *IDS)
            await remote_created(openai_api)
            await proxy.pause()  # the database goes away ...
            openai_api.release_held.set()  # ... before the create's answer arrives

            def not_recorded() -> bool:
                return any("submitting batch" in r.getMessage() for r in caplog.records)

            await wait_until(not_recorded, timeout=20, what="recording the remote batch failed")
            await proxy.resume()
            batch = await followed_once(app, openai_api, receiver, *IDS)
            assert "an earlier attempt created it" in reasons(batch)
            assert openai_api.calls.count(("POST", "/v1/batches")) == 1


async def test_an_operator_retry_of_a_failed_batch_is_a_new_submission(
    database_url: str, openai_api: OpenAIBatchStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    openai_api.next_batches = [{"error_code": "too_many_tasks"}]  # OpenAI fails the first batch
    async with start_app(openai_settings(database_url, openai_api)) as app:
        await submit(app, receiver, "or/1")
        assert (await finished(app, "or/1"))["or/1"]["status"] == "failed"
        [failed] = await batches(app)
        assert (await app.client.post(f"/api/batches/{failed['id']}/retry")).status_code == 202

        async def succeeded() -> bool:
            # The request's result lands while the batch is still collecting: wait for both.
            request = (await app.client.get("/api/requests/or/1")).json()
            return request["status"] == "succeeded" and (await batches(app))[0]["status"] == "done"

        await wait_until(succeeded, timeout=20, what="the retried request succeeded and its batch done")
        [batch] = await batches(app)
        first, second = openai_api.created
        # A fresh key: the old failed remote batch was not adopted, a new one was created.
        assert first["metadata"][SUBMISSION_KEY] == failed["remote"]["submission_key"]
        assert second["metadata"][SUBMISSION_KEY] == batch["remote"]["submission_key"]
        assert first["metadata"][SUBMISSION_KEY] != second["metadata"][SUBMISSION_KEY]
        assert batch["remote"]["batch_id"] != failed["remote"]["batch_id"]
        assert len(openai_api.batches) == 2 and batch["status"] == "done"
