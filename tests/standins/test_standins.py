"""Self-tests for the stand-in servers."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from testkit.standins.asgi import Receive, Scope, Send
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.serve import serve

pytestmark = pytest.mark.asyncio


def _chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "m1", "messages": [{"role": "user", "content": content}], **extra}


async def test_chat_completion_echoes_and_sets_request_id() -> None:
    app = InferenceStandin()
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.post("/v1/chat/completions", json=_chat("hello there"))
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_")
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "m1"
    assert body["choices"][0]["message"]["content"] == "echo: hello there"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert app.calls[0]["key"] == "hello there"
    assert app.calls[0]["headers"]["content-type"] == "application/json"


async def test_other_routes_and_errors() -> None:
    app = InferenceStandin()
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        comp = await client.post("/v1/completions", json={"model": "m", "prompt": "hi"})
        emb = await client.post("/v1/embeddings", json={"model": "e", "input": "hi"})
        resp = await client.post("/v1/responses", json={"model": "r", "input": "hi"})
        mod = await client.post("/v1/moderations", json={"model": "mod", "input": "hi"})
        missing = await client.post("/v1/nope", json={})
        wrong_method = await client.get("/v1/chat/completions")
    assert comp.json()["choices"][0]["text"] == "echo: hi"
    assert emb.json()["data"][0]["embedding"] == [0.1, 0.2, 0.3]
    assert resp.json()["model"] == "r"
    assert mod.json()["model"] == "mod"
    assert (missing.status_code, wrong_method.status_code) == (404, 405)


async def test_fail_first_then_success_with_retry_after() -> None:
    app = InferenceStandin()
    app.fail_first = {"u1": 2}
    app.fail_status = 503
    app.retry_after = 1.5
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        statuses = []
        for _ in range(3):
            r = await client.post("/v1/chat/completions", json=_chat("x", user="u1"))
            statuses.append(r.status_code)
            if r.status_code != 200:
                assert r.headers["retry-after"] == "1.5"
                assert r.json()["error"]["type"] == "server_error"
    assert statuses == [503, 503, 200]
    assert app.calls_by_key["u1"] == 3


async def test_required_api_key() -> None:
    app = InferenceStandin()
    app.required_api_key = "sk-test"
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        denied = await client.post("/v1/chat/completions", json=_chat("a"))
        allowed = await client.post(
            "/v1/chat/completions", json=_chat("a"), headers={"Authorization": "Bearer sk-test"}
        )
    assert denied.status_code == 401
    assert allowed.status_code == 200


async def test_max_in_flight_tracks_concurrency() -> None:
    app = InferenceStandin()
    app.delay_seconds = 0.2
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        results = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=_chat(f"q{i}")) for i in range(5))
        )
    assert [r.status_code for r in results] == [200] * 5
    assert app.max_in_flight == 5
    assert app.in_flight == 0


async def test_receiver_records_and_obeys_switches() -> None:
    receiver = WebhookReceiver()
    receiver.fail_first = {"a": 1}
    receiver.status_for = {"b": 410, "c": 302}
    async with serve(receiver) as url, httpx.AsyncClient(base_url=url) as client:
        codes = [
            (await client.post("/hook", json={"n": 1}, headers={"X-Batchgate-Custom-Id": "a"})).status_code,
            (await client.post("/hook", json={"n": 2}, headers={"X-Batchgate-Custom-Id": "a"})).status_code,
            (await client.post("/hook", json={"custom_id": "b"})).status_code,
            (await client.post("/other", json={"custom_id": "c"})).status_code,
        ]
        redirect = receiver.received[-1]
        await receiver.wait_for(lambda rcv: len(rcv.received) == 4, timeout=1.0)
    assert codes == [500, 200, 410, 302]
    first = receiver.received[0]
    assert first.headers["x-batchgate-custom-id"] == "a"
    assert first.json == {"n": 1}
    assert first.path == "/hook"
    assert redirect.path == "/other"
    assert [r.json for r in receiver.successes("a")] == [{"n": 2}]
    assert sorted(receiver.by_custom_id()) == ["a", "b", "c"]


async def test_receiver_delay_outlasts_client_timeout_and_shutdown_is_bounded() -> None:
    receiver = WebhookReceiver()
    receiver.delay_for = {"slow": 30.0}
    handler_ended: list[str] = []

    async def watched(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await receiver(scope, receive, send)
        except asyncio.CancelledError:
            handler_ended.append("cancelled")
            raise
        if scope["type"] == "http":
            handler_ended.append("answered")

    async with (
        serve(watched, graceful_timeout=1) as url,
        httpx.AsyncClient(base_url=url, timeout=0.2) as client,
    ):
        with pytest.raises(httpx.TimeoutException):
            await client.post("/hook", json={"custom_id": "slow"})
        assert handler_ended == []  # the client gave up; the receiver still holds the request
    # The attempt is recorded even though the client gave up.
    assert [r.custom_id for r in receiver.received] == ["slow"]
    # Shutdown did not sit out the 30 s delay: the graceful timeout cancelled the handler.
    assert handler_ended == ["cancelled"]


async def test_two_servers_at_once_and_wait_for_timeout() -> None:
    app, receiver = InferenceStandin(), WebhookReceiver()
    async with serve(app) as api_url, serve(receiver) as hook_url:
        assert api_url != hook_url
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{api_url}/v1/chat/completions", json=_chat("hi"))
            await client.post(f"{hook_url}/cb", json={"custom_id": "z", "result": r.json()})
        await receiver.wait_for(lambda rcv: bool(rcv.successes("z")), timeout=1.0)
        with pytest.raises(TimeoutError, match="1 received"):
            await receiver.wait_for(lambda rcv: False, timeout=0.2)
