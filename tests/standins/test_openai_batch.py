"""Self-tests for the OpenAI Batch API stand-in, plus a contract test through the official SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai.types import Batch, CreateEmbeddingResponse, FileObject
from openai.types.chat import ChatCompletion

from testkit.standins.asgi import Relay
from testkit.standins.openai_batch import OpenAIBatchStandin, parse_multipart
from testkit.standins.serve import serve
from testkit.waiting import wait_until

CHAT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}

# All tests share one event loop so they can share the module's server.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def chat_line(custom_id: str, text: str, url: str = CHAT, **body: Any) -> dict[str, Any]:
    """One batch input line for the chat endpoint."""
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": payload}


def jsonl(*lines: dict[str, Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def lines_abc() -> bytes:
    return jsonl(chat_line("a", "one two"), chat_line("b", "three"), chat_line("c", "four five six"))


def checked(raw: dict[str, Any]) -> dict[str, Any]:
    """Every batch JSON the stand-in returns must parse as the SDK's Batch type."""
    Batch.model_validate(raw)
    return raw


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[tuple[Relay, str]]:
    """One uvicorn server for the whole module, relaying to the stand-in the running test installed:
    each server shutdown costs a fixed 0.1 s sleep inside uvicorn, which would dominate this file's
    runtime."""
    relay = Relay(OpenAIBatchStandin())
    async with serve(relay) as url:
        yield relay, url


@pytest_asyncio.fixture(loop_scope="module")
async def api(server: tuple[Relay, str]) -> AsyncIterator[tuple[OpenAIBatchStandin, httpx.AsyncClient]]:
    """A fresh stand-in behind the shared server, and an httpx client on its /v1."""
    current, url = server
    current.app = app = OpenAIBatchStandin()
    async with httpx.AsyncClient(base_url=f"{url}/v1") as client:
        yield app, client


async def upload(client: httpx.AsyncClient, data: bytes, name: str = "in.jsonl") -> str:
    r = await client.post("/files", data={"purpose": "batch"}, files={"file": (name, data)})
    assert r.status_code == 200, r.text
    return str(FileObject.model_validate(r.json()).id)


async def create(client: httpx.AsyncClient, data: bytes, endpoint: str = CHAT) -> dict[str, Any]:
    file_id = await upload(client, data)
    r = await client.post(
        "/batches", json={"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}
    )
    assert r.status_code == 200, r.text
    return checked(r.json())


async def poll(client: httpx.AsyncClient, batch_id: str, limit: int = 12) -> list[dict[str, Any]]:
    """GET the batch until it is terminal; every response, in order."""
    seen: list[dict[str, Any]] = []
    for _ in range(limit):
        r = await client.get(f"/batches/{batch_id}")
        assert r.status_code == 200, r.text
        seen.append(checked(r.json()))
        if seen[-1]["status"] in TERMINAL:
            return seen
    raise AssertionError(f"not terminal after {limit} polls: {[b['status'] for b in seen]}")


async def content(client: httpx.AsyncClient, file_id: str | None) -> list[str]:
    if file_id is None:
        return []
    r = await client.get(f"/files/{file_id}/content")
    assert r.status_code == 200
    return r.text.splitlines()


async def records(client: httpx.AsyncClient, file_id: str | None) -> dict[str, dict[str, Any]]:
    return {rec["custom_id"]: rec for rec in map(json.loads, await content(client, file_id))}


# ---------------------------------------------------------------------- files


async def test_file_upload_retrieve_content_delete(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    data = lines_abc()[:-1] + "\r\nnon-ascii: é\n".encode()  # bytes must round-trip exactly
    file_id = await upload(client, data)
    obj = (await client.get(f"/files/{file_id}")).json()
    assert FileObject.model_validate(obj).purpose == "batch"
    assert (obj["id"].startswith("file-"), obj["bytes"], obj["filename"]) == (True, len(data), "in.jsonl")
    assert obj["expires_at"] == obj["created_at"] + 30 * 24 * 3600  # batch files default to 30 days
    body = await client.get(f"/files/{file_id}/content")
    assert body.content == data == app.files[file_id]
    assert body.headers["content-type"] == "application/octet-stream"
    assert app.uploads[-1]["size"] == len(data) and app.uploads[-1]["chunked"] is False

    listed = (await client.get("/files", params={"purpose": "batch"})).json()
    assert [f["id"] for f in listed["data"]] == [file_id]

    deleted = await client.delete(f"/files/{file_id}")
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
    assert app.deleted_files == [file_id]
    for r in (
        await client.get(f"/files/{file_id}"),
        await client.get(f"/files/{file_id}/content"),
        await client.delete(f"/files/{file_id}"),
    ):
        assert r.status_code == 404
        assert r.json() == {
            "error": {"message": f"No such File object: {file_id}", "type": "invalid_request_error",
                      "param": "id", "code": None}
        }  # fmt: skip


async def test_upload_rejections_and_expires_after(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    _, client = api
    wrong = await client.post("/files", data={"purpose": "fine-tune"}, files={"file": ("x", b"{}")})
    no_file = await client.post("/files", data={"purpose": "batch"}, files={"other": ("x", b"{}")})
    not_multipart = await client.post("/files", json={"purpose": "batch"})
    assert [r.status_code for r in (wrong, no_file, not_multipart)] == [400, 400, 400]
    assert wrong.json()["error"]["param"] == "purpose"
    assert no_file.json()["error"]["param"] == "file"
    r = await client.post(
        "/files",
        data={"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},
        files={"file": ("x.jsonl", b"{}")},
    )
    assert r.json()["expires_at"] == r.json()["created_at"] + 3600


async def test_chunked_upload_without_content_length(
    api: tuple[OpenAIBatchStandin, httpx.AsyncClient],
) -> None:
    app, client = api
    data = lines_abc()
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            f"Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 50):  # many small chunks, split mid-header and mid-file
            yield body[i : i + 50]

    r = await client.post(
        "/files", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 200, r.text
    upload = app.uploads[-1]
    assert upload["chunked"] is True
    assert upload["headers"]["transfer-encoding"] == "chunked"
    assert "content-length" not in upload["headers"]
    assert app.files[r.json()["id"]] == data and upload["size"] == len(data)


async def test_parse_multipart_keeps_bytes_exact() -> None:
    payload = b"line1\r\nline2\n--not-the-boundary\r\n"
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="f.jsonl"\r\n\r\n'
        + payload
        + b'\r\n--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--xyz--\r\n'
    )
    fields = parse_multipart("multipart/form-data; boundary=xyz", body)
    assert fields["file"].content == payload and fields["file"].filename == "f.jsonl"
    assert fields["purpose"].content == b"batch"


# ---------------------------------------------------------------------- batches


async def test_create_rejections_and_unknown_ids(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    file_id = await upload(client, lines_abc())
    base = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    bad = [
        base | {"input_file_id": "file-missing"},
        base | {"completion_window": "48h"},
        base | {"endpoint": "/v1/images/variations"},
        base | {"metadata": {"tags": ["x"]}},
        {"endpoint": CHAT, "completion_window": "24h"},
    ]
    answers = [await client.post("/batches", json=b) for b in bad]
    assert [r.status_code for r in answers] == [400] * 5
    assert [r.json()["error"]["param"] for r in answers] == [
        "input_file_id", "completion_window", "endpoint", "metadata.tags", "input_file_id"
    ]  # fmt: skip
    assert answers[2].json()["error"]["code"] == "invalid_value"
    assert app.created == bad
    assert not app.batches
    unknown = [await client.get("/batches/batch_nope"), await client.post("/batches/batch_nope/cancel")]
    assert [r.status_code for r in unknown] == [404, 404]
    assert unknown[0].json()["error"]["type"] == "invalid_request_error"
    assert (await client.put("/batches")).status_code == 405
    assert (await client.get("/nothing")).status_code == 404


async def test_happy_path_state_machine(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    created = await create(client, lines_abc())
    assert created["status"] == "validating" and created["id"].startswith("batch_")
    assert created["expires_at"] == created["created_at"] + 24 * 3600
    assert created["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    seen = await poll(client, created["id"])
    assert [b["status"] for b in seen] == ["validating", "in_progress", "finalizing", "completed"]
    assert seen[1]["in_progress_at"] is not None and seen[1]["request_counts"]["total"] == 3
    done = seen[-1]
    assert done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert done["error_file_id"] is None and done["model"] == "gpt-4o-mini"
    assert done["finalizing_at"] is not None and done["completed_at"] is not None
    # prompt words 2+1+3, replies "echo: ..." 3+2+4 words
    assert done["usage"] == {
        "input_tokens": 6, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15,
    }  # fmt: skip
    out = await records(client, done["output_file_id"])
    assert list(out) == ["a", "b", "c"]
    first = out["a"]
    assert first["id"].startswith("batch_req_") and first["error"] is None
    assert first["response"]["status_code"] == 200 and first["response"]["request_id"].startswith("req_")
    completion = ChatCompletion.model_validate(first["response"]["body"])
    assert completion.choices[0].message.content == "echo: one two"
    assert app.file_objects[done["output_file_id"]]["purpose"] == "batch_output"
    assert app.results[done["id"]]["c"]["response"]["body"]["usage"]["prompt_tokens"] == 3
    assert app.executed == [(done["id"], "a"), (done["id"], "b"), (done["id"], "c")]
    # Terminal batches stay put.
    assert (await poll(client, done["id"]))[-1] == done


async def test_polls_per_status_two_and_zero(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    app.polls_per_status = 2
    slow = await create(client, lines_abc())
    assert [b["status"] for b in await poll(client, slow["id"])] == [
        "validating", "validating", "in_progress", "in_progress", "finalizing", "finalizing", "completed"
    ]  # fmt: skip
    app.polls_per_status = 0
    fast = await create(client, lines_abc())
    assert [b["status"] for b in await poll(client, fast["id"])] == ["completed"]


async def test_structural_validation(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    app.polls_per_status = 0
    bad = (
        jsonl(chat_line("a", "x"), chat_line("b", "y", url="/v1/completions"))
        + b"{not json\n"
        + jsonl({"custom_id": "d", "method": "POST", "url": CHAT}, chat_line("a", "dup"))
    )
    failed = (await poll(client, (await create(client, bad))["id"]))[-1]
    assert failed["status"] == "failed" and failed["failed_at"] is not None
    assert [(e["code"], e["line"], e["param"]) for e in failed["errors"]["data"]] == [
        ("invalid_url", 2, "url"),
        ("invalid_json_line", 3, None),
        ("missing_required_parameter", 4, "body"),
        ("duplicate_custom_id", 5, "custom_id"),
    ]
    assert failed["output_file_id"] is None and failed["error_file_id"] is None
    assert failed["request_counts"]["total"] == 0 and failed["usage"] is None
    empty = (await poll(client, (await create(client, b"\n"))["id"]))[-1]
    assert empty["errors"]["data"][0]["code"] == "empty_file"
    assert app.executed == []


async def test_line_statuses_split_output_and_error_files(
    api: tuple[OpenAIBatchStandin, httpx.AsyncClient],
) -> None:
    app, client = api
    app.polls_per_status = 0
    app.line_statuses = {"a": [429], "b": [503, 200]}
    data = jsonl(chat_line("a", "x"), chat_line("b", "y"), chat_line("c", "z", user="cached"))
    first = (await poll(client, (await create(client, data))["id"]))[-1]
    assert first["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    errors = await records(client, first["error_file_id"])
    assert errors["a"]["response"]["status_code"] == 429 and errors["a"]["error"] is None
    assert errors["a"]["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert errors["b"]["response"]["status_code"] == 500
    assert errors["b"]["response"]["body"]["error"]["type"] == "server_error"
    assert list(await records(client, first["output_file_id"])) == ["c"]
    # "user": "cached" caches half of the prompt (1 word -> 0); usage counts only the 2xx line.
    assert first["usage"]["input_tokens"] == 1
    # The switch persists across batches: b pops its next status (200), a's list is empty.
    second = (await poll(client, (await create(client, data))["id"]))[-1]
    assert second["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert second["error_file_id"] is None
    assert app.line_statuses == {"a": [], "b": []}

    app.line_statuses = {"a": [400], "b": [400], "c": [400]}
    none_ok = (await poll(client, (await create(client, data))["id"]))[-1]
    assert none_ok["output_file_id"] is None and none_ok["request_counts"]["failed"] == 3


async def test_cached_tokens(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    app.polls_per_status = 0
    done = await poll(
        client, (await create(client, jsonl(chat_line("a", "w1 w2 w3 w4", user="cached"))))["id"]
    )
    usage = done[-1]["usage"]
    assert usage["input_tokens"] == 4 and usage["input_tokens_details"]["cached_tokens"] == 2
    body = (await records(client, done[-1]["output_file_id"]))["a"]["response"]["body"]
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 2


async def test_scenarios_fail_validation_and_error_code(
    api: tuple[OpenAIBatchStandin, httpx.AsyncClient],
) -> None:
    app, client = api
    app.next_batches = [
        {"fail_validation": {"b": "model_not_found", "c": {"code": "invalid_request", "param": "body.x"}}},
        {"error_code": "token_limit_exceeded"},
    ]
    one = await poll(client, (await create(client, lines_abc()))["id"])
    assert [b["status"] for b in one] == ["validating", "failed"]
    assert [(e["code"], e["line"], e["param"]) for e in one[-1]["errors"]["data"]] == [
        ("model_not_found", 2, "body.model"),
        ("invalid_request", 3, "body.x"),
    ]
    two = (await poll(client, (await create(client, lines_abc()))["id"]))[-1]
    assert two["errors"]["object"] == "list"
    assert [(e["code"], e["line"], e["param"]) for e in two["errors"]["data"]] == [
        ("token_limit_exceeded", None, None)
    ]
    assert two["output_file_id"] is None and two["error_file_id"] is None
    three = (await poll(client, (await create(client, lines_abc()))["id"]))[-1]  # list drained: normal
    assert three["status"] == "completed" and app.next_batches == []


async def test_expire_after(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    app.next_batches = [{"expire_after": 1}]
    app.line_statuses = {"a": [500]}
    seen = await poll(client, (await create(client, lines_abc()))["id"])
    done = seen[-1]
    assert [b["status"] for b in seen][-1] == "expired" and done["expired_at"] is not None
    assert done["completed_at"] is None
    assert done["output_file_id"] is None  # the one executed line failed
    errors = await records(client, done["error_file_id"])
    assert errors["a"]["response"]["status_code"] == 500
    for cid in ("b", "c"):
        assert errors[cid]["response"] is None
        assert errors[cid]["error"] == {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        }
    assert done["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    assert [cid for _, cid in app.executed] == ["a"]


async def test_late_output_polls(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    app.polls_per_status = 0
    app.line_statuses = {"c": [404]}
    app.next_batches = [{"late_output_polls": 2}]
    batch_id = (await create(client, lines_abc()))["id"]
    views = [checked((await client.get(f"/batches/{batch_id}")).json()) for _ in range(3)]
    assert [v["status"] for v in views] == ["completed"] * 3
    assert [(v["output_file_id"] is None, v["error_file_id"] is None) for v in views] == [
        (True, True), (True, True), (False, False)
    ]  # fmt: skip
    assert app.batches[batch_id]["output_file_id"] == views[-1]["output_file_id"]


async def test_cancel_after_scenario(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    app.next_batches = [{"cancel_after": 2}]
    app.line_statuses = {"b": [400]}
    seen = await poll(client, (await create(client, lines_abc()))["id"])
    assert [b["status"] for b in seen] == ["validating", "in_progress", "cancelling", "cancelled"]
    done = seen[-1]
    assert done["cancelling_at"] is not None and done["cancelled_at"] is not None
    assert list(await records(client, done["output_file_id"])) == ["a"]
    assert list(await records(client, done["error_file_id"])) == ["b"]  # "c" appears in neither
    assert done["request_counts"] == {"total": 3, "completed": 1, "failed": 1}


async def test_client_cancel(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    app.cancel_partial_lines = 1
    app.cancelling_polls = 2
    batch_id = (await create(client, lines_abc()))["id"]
    assert (await client.get(f"/batches/{batch_id}")).json()["status"] == "validating"
    assert (await client.get(f"/batches/{batch_id}")).json()["status"] == "in_progress"
    cancelled = checked((await client.post(f"/batches/{batch_id}/cancel")).json())
    assert cancelled["status"] == "cancelling" and cancelled["cancelling_at"] is not None
    seen = await poll(client, batch_id)
    assert [b["status"] for b in seen] == ["cancelling", "cancelling", "cancelled"]
    assert list(await records(client, seen[-1]["output_file_id"])) == ["a"]
    assert seen[-1]["error_file_id"] is None
    again = await client.post(f"/batches/{batch_id}/cancel")  # cancelling a cancelled batch is allowed
    assert again.status_code == 200 and again.json()["status"] == "cancelled"

    # Cancelled while validating: never parsed, so no results at all.
    early = (await create(client, lines_abc()))["id"]
    await client.post(f"/batches/{early}/cancel")
    app.cancelling_polls = 0
    final = (await poll(client, early))[-1]
    assert final["status"] == "cancelled" and final["output_file_id"] is None
    assert final["request_counts"] == {"total": 0, "completed": 0, "failed": 0}

    app.polls_per_status = 0
    done = (await poll(client, (await create(client, lines_abc()))["id"]))[-1]
    conflict = await client.post(f"/batches/{done['id']}/cancel")
    assert conflict.status_code == 409 and "completed" in conflict.json()["error"]["message"]


async def test_malformed_lines(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    app.polls_per_status = 0
    app.next_batches = [{"malformed": ["b"]}]
    done = (await poll(client, (await create(client, lines_abc()))["id"]))[-1]
    raw = await content(client, done["output_file_id"])
    assert len(raw) == 3 and len(raw[1]) == 40
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw[1])
    assert [r["custom_id"] for r in app.output_lines(done["output_file_id"])] == ["a", "c"]
    assert done["request_counts"]["completed"] == 3


async def test_reverse_output_and_other_endpoints(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    app.polls_per_status = 0
    app.reverse_output = True
    done = (await poll(client, (await create(client, lines_abc()))["id"]))[-1]
    assert list(await records(client, done["output_file_id"])) == ["c", "b", "a"]
    app.reverse_output = False
    bodies = {
        "/v1/completions": {"model": "m", "prompt": "hi there"},
        "/v1/embeddings": {"model": "e", "input": ["a b", "c"]},
        "/v1/responses": {"model": "r", "input": "hi"},
        "/v1/moderations": {"model": "omni-moderation-latest", "input": "hi"},
    }
    validators: dict[str, Any] = {
        "/v1/completions": openai.types.Completion,
        "/v1/embeddings": CreateEmbeddingResponse,
        "/v1/responses": openai.types.responses.Response,
        "/v1/moderations": openai.types.ModerationCreateResponse,
    }
    for url, body in bodies.items():
        line = {"custom_id": "x", "method": "POST", "url": url, "body": body}
        done = (await poll(client, (await create(client, jsonl(line), endpoint=url))["id"]))[-1]
        assert done["status"] == "completed", done
        out = (await records(client, done["output_file_id"]))["x"]["response"]["body"]
        validators[url].model_validate(out)
    assert done["usage"] is not None
    embed_batch = next(b for b in app.batches.values() if b["endpoint"] == "/v1/embeddings")
    assert embed_batch["usage"]["input_tokens"] == 3 and embed_batch["usage"]["output_tokens"] == 0


async def test_auth_forbidden_fail_next_and_recordings(
    api: tuple[OpenAIBatchStandin, httpx.AsyncClient],
) -> None:
    app, client = api
    app.required_api_key = "sk-right"
    denied = await client.get("/models")
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
    client.headers["authorization"] = "Bearer sk-right"
    client.headers["openai-organization"] = "org-9"
    assert (await client.get("/models")).json()["data"][0]["id"] == "gpt-4o-mini"

    app.forbidden = True
    assert [(await client.get(p)).status_code for p in ("/models", "/batches")] == [403, 403]
    app.forbidden = False

    app.fail_next = [429, 503]
    app.retry_after = "2"
    assert (await client.get("/models")).status_code == 200  # models never consume fail_next
    limited = await client.get("/batches")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert limited.json()["error"] | {"message": ""} == {
        "message": "", "type": "requests", "param": None, "code": "rate_limit_exceeded"
    }  # fmt: skip
    broken = await client.get("/batches")
    assert broken.status_code == 503 and broken.json()["error"]["type"] == "server_error"
    ok = await client.get("/batches")
    assert ok.json() == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    assert "retry-after" not in ok.headers and ok.headers["x-request-id"].startswith("req_")

    assert app.calls[:2] == [("GET", "/v1/models"), ("GET", "/v1/models")]
    assert app.calls[-1] == ("GET", "/v1/batches") and len(app.calls) == len(app.call_headers) == 8
    assert app.call_headers[-1]["openai-organization"] == "org-9"
    app.reset()
    assert (app.calls, app.call_headers, app.required_api_key) == ([], [], "sk-right")


async def test_list_batches_newest_first_with_paging(
    api: tuple[OpenAIBatchStandin, httpx.AsyncClient],
) -> None:
    app, client = api
    ids = [(await create(client, lines_abc()))["id"] for _ in range(3)]
    page = (await client.get("/batches", params={"limit": 2})).json()
    assert [b["id"] for b in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = (await client.get("/batches", params={"after": page["last_id"]})).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False
    for b in page["data"] + rest["data"]:
        checked(b)
    assert all(app.batches[i]["status"] == "validating" for i in ids)  # listing does not advance


async def test_lost_create_answers_create_the_batch_all_the_same(
    api: tuple[OpenAIBatchStandin, httpx.AsyncClient],
) -> None:
    app, client = api
    file_id = await upload(client, lines_abc())
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", "metadata": {"k": "v"}}
    app.lost_create_answers = ["500", "disconnect", "timeout", "hold", "hold"]
    assert (await client.post("/batches", json=body)).status_code == 500
    with pytest.raises(httpx.RemoteProtocolError):  # closed halfway through the answer
        await client.post("/batches", json=body)
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/batches", json=body, timeout=0.2)
    with pytest.raises(httpx.ReadTimeout):  # held, and the client gave up first
        await client.post("/batches", json=body, timeout=0.2)
    held = asyncio.create_task(client.post("/batches", json=body))
    await wait_until(lambda: len(app.batches) == 5, timeout=10, what="the held create applied")
    assert not held.done()
    app.release_held.set()
    answer = (await held).json()
    assert answer["id"] in app.batches and not app.lost_create_answers
    listed = (await client.get("/batches", params={"limit": 100})).json()["data"]
    assert len(listed) == 5 and all(checked(b)["metadata"] == {"k": "v"} for b in listed)


async def test_late_answers_and_slow_downloads(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    app, client = api
    app.answer_delays = {r"POST /v1/batches": 0.3}
    file_id = await upload(client, lines_abc())  # other routes answer at once
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    late = asyncio.create_task(client.post("/batches", json=body))
    await wait_until(lambda: len(app.batches) == 1, timeout=10, what="the create applied")
    assert not late.done()  # applied, the answer still held back
    assert (await late).json()["id"] in app.batches

    app.content_line_delay = 0.1
    loop = asyncio.get_running_loop()
    async with client.stream("GET", f"/files/{file_id}/content") as response:
        lines = response.aiter_lines()
        first = await anext(lines)
        assert json.loads(first)["custom_id"] == "a"
        started = loop.time()
        rest = [line async for line in lines]
    assert loop.time() - started >= 0.15  # the other lines came a line's delay apart
    assert (first + "\n" + "\n".join(rest) + "\n").encode() == app.files[file_id]


# ---------------------------------------------------------------------- SDK contract


@pytest_asyncio.fixture(loop_scope="module")
async def sdk(server: tuple[Relay, str]) -> AsyncIterator[tuple[OpenAIBatchStandin, openai.AsyncOpenAI]]:
    """A fresh stand-in and the official async client pointed at it (no retries)."""
    current, url = server
    current.app = app = OpenAIBatchStandin()
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="sk-test", max_retries=0, organization="org-1", project="proj-1"
    ) as client:
        yield app, client


async def wait_terminal(client: openai.AsyncOpenAI, batch: Batch) -> Batch:
    for _ in range(12):
        if batch.status in TERMINAL:
            return batch
        batch = await client.batches.retrieve(batch.id)
    raise AssertionError(f"batch stuck in {batch.status}")


async def test_sdk_completed_chat_and_embedding_batches(
    sdk: tuple[OpenAIBatchStandin, openai.AsyncOpenAI],
) -> None:
    app, client = sdk
    uploaded = await client.files.create(file=("in.jsonl", lines_abc()), purpose="batch")
    assert (uploaded.purpose, uploaded.status, uploaded.filename) == ("batch", "processed", "in.jsonl")
    assert (await client.files.retrieve(uploaded.id)).bytes == len(lines_abc())
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h", metadata={"job": "t1"}
    )
    assert (batch.status, batch.metadata) == ("validating", {"job": "t1"})
    batch = await wait_terminal(client, batch)
    assert batch.status == "completed" and batch.request_counts is not None
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (3, 3, 0)
    assert batch.usage is not None and batch.usage.total_tokens == 15
    assert batch.usage.input_tokens_details.cached_tokens == 0
    assert batch.model == "gpt-4o-mini"
    assert batch.output_file_id is not None and batch.error_file_id is None
    text = (await client.files.content(batch.output_file_id)).text
    replies = []
    for line in text.splitlines():
        completion = ChatCompletion.model_validate(json.loads(line)["response"]["body"])
        assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
        replies.append(completion.choices[0].message.content)
    assert replies == ["echo: one two", "echo: three", "echo: four five six"]

    emb_line = {
        "custom_id": "e",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": "hello world"},
    }
    emb_file = await client.files.create(file=("e.jsonl", jsonl(emb_line)), purpose="batch")
    emb = await client.batches.create(
        input_file_id=emb_file.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    emb = await wait_terminal(client, emb)
    assert emb.output_file_id is not None
    record = json.loads((await client.files.content(emb.output_file_id)).text)
    embedding = CreateEmbeddingResponse.model_validate(record["response"]["body"])
    assert embedding.usage.prompt_tokens == 2 and embedding.data[0].embedding == [0.1, 0.2, 0.3]
    assert {h.get("openai-organization") for h in app.call_headers} == {"org-1"}
    assert {h.get("openai-project") for h in app.call_headers} == {"proj-1"}


async def test_sdk_failed_cancel_list_delete(sdk: tuple[OpenAIBatchStandin, openai.AsyncOpenAI]) -> None:
    app, client = sdk
    bad = jsonl(chat_line("a", "x"), chat_line("b", "y", url="/v1/embeddings"))
    bad_file = await client.files.create(file=("bad.jsonl", bad), purpose="batch")
    failed = await client.batches.create(input_file_id=bad_file.id, endpoint=CHAT, completion_window="24h")
    failed = await wait_terminal(client, failed)
    assert failed.status == "failed" and failed.errors is not None and failed.errors.data
    assert (failed.errors.data[0].code, failed.errors.data[0].line) == ("invalid_url", 2)
    assert failed.failed_at is not None and failed.usage is None

    app.polls_per_status = 0
    good = await client.files.create(file=("in.jsonl", lines_abc()), purpose="batch")
    done = await wait_terminal(
        client, await client.batches.create(input_file_id=good.id, endpoint=CHAT, completion_window="24h")
    )
    to_cancel = await client.batches.create(input_file_id=good.id, endpoint=CHAT, completion_window="24h")
    cancelling = await client.batches.cancel(to_cancel.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    cancelled = await wait_terminal(client, cancelling)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    with pytest.raises(openai.ConflictError):
        await client.batches.cancel(done.id)

    listed = await client.batches.list(limit=10)
    assert [b.id for b in listed.data] == [to_cancel.id, done.id, failed.id]
    assert listed.has_more is False

    deleted = await client.files.delete(good.id)
    assert deleted.deleted and app.deleted_files == [good.id]
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(good.id)
    with pytest.raises(openai.BadRequestError):
        await client.batches.create(input_file_id=good.id, endpoint=CHAT, completion_window="24h")


async def test_sdk_error_mapping(sdk: tuple[OpenAIBatchStandin, openai.AsyncOpenAI]) -> None:
    app, client = sdk
    app.fail_next = [429, 500]
    app.retry_after = "1"
    with pytest.raises(openai.RateLimitError) as limited:
        await client.batches.list()
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError):
        await client.batches.list()
    app.required_api_key = "sk-other"
    with pytest.raises(openai.AuthenticationError) as denied:
        await client.files.create(file=("in.jsonl", lines_abc()), purpose="batch")
    assert denied.value.code == "invalid_api_key"
    app.required_api_key = None
    app.forbidden = True
    with pytest.raises(openai.PermissionDeniedError):
        await client.models.list()


async def test_every_state_validates_as_sdk_types(api: tuple[OpenAIBatchStandin, httpx.AsyncClient]) -> None:
    """Batch / FileObject JSON in each terminal and intermediate status parses with the SDK types."""
    app, client = api
    app.line_statuses = {"b": [500]}
    app.next_batches = [{}, {"error_code": "empty_file"}, {"expire_after": 0}, {"cancel_after": 1}]
    statuses: set[str] = set()
    for _ in range(4):
        for raw in await poll(client, (await create(client, lines_abc()))["id"]):
            batch = Batch.model_validate(raw)
            statuses.add(batch.status)
            for file_id in (batch.output_file_id, batch.error_file_id, batch.input_file_id):
                if file_id is not None:
                    FileObject.model_validate((await client.get(f"/files/{file_id}")).json())
    cancelling = (await create(client, lines_abc()))["id"]
    statuses.add(Batch.model_validate((await client.post(f"/batches/{cancelling}/cancel")).json()).status)
    assert statuses == {
        "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"
    }  # fmt: skip
