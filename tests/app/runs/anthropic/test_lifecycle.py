"""An Anthropic batch from ready to done: created once, polled until it ends, each result type
mapped onto its request, usage kept on the batch; chat requests go as Messages and come back as
chat.completions."""

from __future__ import annotations

from app.db.session import Database
from app.ground.statuses import BatchStatus, RequestStatus
from testkit.anthropic_batch import batch_row, ready_batch, requests_of, run_until, runner, timeline
from testkit.standins.anthropic_batch import AnthropicBatchStandin


async def test_results_of_every_type_land_on_their_requests(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin
) -> None:
    anthropic_api.polls_to_end = 3
    anthropic_api.outcome_for = {
        "bad": "errored",
        "late": "expired",
        "stopped": "canceled",
        "lost": "missing",
    }
    batch_id = await ready_batch(db, "hello", "bad", "late", "stopped", "lost")
    async with runner(db, database_url, anthropic_api) as run:
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.DONE, await timeline(db, batch_id)
    [remote_id] = anthropic_api.batches
    assert batch.remote_batch_id == remote_id
    assert anthropic_api.calls.count(("POST", "/v1/messages/batches")) == 1
    got = await requests_of(db, batch_id)
    assert {cid: r.status for cid, r in got.items()} == {
        "hello": RequestStatus.SUCCEEDED,
        "bad": RequestStatus.FAILED,
        "late": RequestStatus.EXPIRED,
        "stopped": RequestStatus.CANCELLED,
        "lost": RequestStatus.FAILED,
    }
    hello = got["hello"].response
    assert hello is not None and hello["status_code"] == 200
    assert hello["body"]["type"] == "message" and hello["body"]["content"][0]["text"] == "reply to hello"
    assert got["bad"].error == {"code": "invalid_request_error", "message": "max_tokens: too large"}
    assert got["lost"].error is not None and got["lost"].error["code"] == "no_result"
    assert (batch.completed_count, batch.failed_count) == (1, 2)
    assert (batch.input_tokens, batch.output_tokens) == (1, 3)
    assert "Anthropic: ended" in await timeline(db, batch_id)


async def test_a_chat_request_goes_as_messages_and_comes_back_as_a_chat_completion(
    db: Database, database_url: str, anthropic_api: AnthropicBatchStandin
) -> None:
    batch_id = await ready_batch(db, "hi there", endpoint="/v1/chat/completions")
    async with runner(db, database_url, anthropic_api) as run:
        batch = await run_until(run, batch_id)
    assert batch.status == BatchStatus.DONE
    [sent] = next(iter(anthropic_api._runs.values())).requests
    assert sent["params"]["messages"] == [{"role": "user", "content": "hi there"}]
    [request] = (await requests_of(db, batch_id)).values()
    assert request.response is not None
    body = request.response["body"]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "reply to hi there"
    assert (request.prompt_tokens, request.completion_tokens) == (2, 4)
    assert (await batch_row(db, batch_id)).input_tokens == 2
