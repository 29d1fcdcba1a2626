"""The official OpenAI SDK, unchanged but for base_url and api_key, runs batches against the
OpenAI face: files and batches as the SDK calls them, OpenAI's objects with every field, its
list pages, its error shape, on SQLite and PostgreSQL and under both mounts."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types import Batch, FileObject

from app.api.anthropic.schemas import batch_id_of
from testkit import RunningApp, StartApp, fast_settings
from testkit.openai_sdk import ENDPOINT, call, line, new_batch, sdk, until_status, upload
from testkit.standins.inference import InferenceStandin

# What the real API fills on every completed batch (errors, metadata and the other ends may be null).
ALWAYS_FILLED_WHEN_COMPLETED = [
    *("id", "object", "status", "model", "endpoint", "completion_window", "input_file_id"),
    *("output_file_id", "created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at"),
    *("request_counts", "usage"),
]


async def raw(app: RunningApp, path: str) -> dict[str, Any]:
    answer = await app.client.get(path)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def refused(exc: openai.APIStatusError, status: int, param: str | None = None) -> dict[str, Any]:
    """The error answer is OpenAI's shape, with its status, and tells the SDK not to retry."""
    assert exc.status_code == status
    error: dict[str, Any] = exc.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    if status != 409:
        assert exc.response.headers["x-should-retry"] == "false"
    return error


async def run_one_batch(app: RunningApp, inference: InferenceStandin, prefix: str) -> None:
    """Upload, create, poll until completed, download both files, and check every field."""
    client = sdk(app, prefix)
    inference.status_for["bad"] = 400
    uploaded = await upload(client, line("a"), line("b"), line("bad", user="bad"))
    created = await new_batch(client, uploaded.id, metadata={"job": "nightly"})
    # Creating wakes the submit step at once, so the answer may already say in_progress.
    assert created.status in ("validating", "in_progress") and created.id.startswith("batch_")
    done = await until_status(client, created.id, "completed")
    assert done.metadata == {"job": "nightly"} and done.model == "stand-in"
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)  # type: ignore[union-attr]
    assert (
        done.usage is not None
        and done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    )

    body = await raw(app, f"{prefix}/batches/{done.id}")
    assert set(body) == set(Batch.model_fields), "every field of openai.types.Batch is present"
    Batch.model_validate(body)
    assert [name for name in ALWAYS_FILLED_WHEN_COMPLETED if body[name] is None] == []
    assert body["created_at"] <= body["in_progress_at"] <= body["finalizing_at"] <= body["completed_at"]

    output = [
        json.loads(x) for x in (await call(client.files.content, done.output_file_id)).text.splitlines()
    ]
    errors = [json.loads(x) for x in (await call(client.files.content, done.error_file_id)).text.splitlines()]  # type: ignore[arg-type]
    assert sorted(o["custom_id"] for o in output) == ["a", "b"]
    for result in output + errors:
        assert set(result) == {"id", "custom_id", "response", "error"}
        assert set(result["response"]) == {"status_code", "request_id", "body"}
    assert all(o["response"]["status_code"] == 200 and o["response"]["body"]["choices"] for o in output)
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("bad", 400)]

    file_body = await raw(app, f"{prefix}/files/{done.output_file_id}")
    assert set(file_body) == set(FileObject.model_fields)
    produced = FileObject.model_validate(file_body)
    assert (produced.purpose, produced.status, produced.object) == ("batch_output", "processed", "file")


async def test_the_sdk_runs_a_batch_and_downloads_its_files(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        await run_one_batch(app, inference, "/v1")


async def test_the_same_flow_under_the_php_package_path(
    sqlite_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    async with start_app(fast_settings(sqlite_url, inference.url + "/v1")) as app:
        await run_one_batch(app, inference, "/api/openai/v1")


# Every base_url a user may give the SDK: the server's /v1, and the face's own prefix with or
# without /v1 (the SDK appends /files and /batches to it, never /v1).
BASE_PATHS = ("/v1", "/api/openai/v1", "/api/openai")


async def test_the_same_flow_with_base_url_at_the_face_prefix_without_v1(
    sqlite_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    async with start_app(fast_settings(sqlite_url, inference.url + "/v1")) as app:
        await run_one_batch(app, inference, "/api/openai")


async def test_every_base_path_serves_files_and_batches_to_the_sdk(
    sqlite_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        for prefix in BASE_PATHS:
            client = sdk(app, prefix)
            uploaded = await upload(client, line(f"under {prefix}"))
            assert (await call(client.files.retrieve, uploaded.id)).id == uploaded.id, prefix
            assert uploaded.id in [f.id for f in (await call(client.files.list)).data], prefix
            assert (await call(client.files.content, uploaded.id)).content == line(f"under {prefix}")
            created = await new_batch(client, uploaded.id)
            assert (await call(client.batches.retrieve, created.id)).input_file_id == uploaded.id
            assert created.id in [b.id for b in (await call(client.batches.list)).data], prefix
            assert (await call(client.batches.cancel, created.id)).status in ("cancelling", "cancelled")


async def test_batches_list_newest_first_in_exact_pages(database_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        uploaded = await upload(client, line("a"))
        ids = [(await new_batch(client, uploaded.id)).id for _ in range(5)]
        # Another face's batch is not this face's to list or show.
        entry = {"custom_id": "x", "params": {"model": "m", "max_tokens": 5, "messages": []}}
        created = await app.client.post("/v1/messages/batches", json={"requests": [entry]})
        other = batch_id_of(created.json()["id"])
        newest_first = ids[::-1]

        pages, after = [], None
        while True:
            page = await call(client.batches.list, limit=2, **({"after": after} if after else {}))
            pages.append(([b.id for b in page.data], page.has_more))
            if not page.has_more:
                break
            after = page.data[-1].id
        assert pages == [(newest_first[0:2], True), (newest_first[2:4], True), (newest_first[4:], False)]
        assert [b.id for b in await call(lambda: list(client.batches.list(limit=2)))] == newest_first
        exact = await call(client.batches.list, limit=5)
        assert [b.id for b in exact.data] == newest_first and exact.has_more is False
        listed = await raw(app, "/v1/batches?limit=2")
        assert (listed["object"], listed["first_id"], listed["last_id"]) == ("list", *newest_first[:2])

        for unknown in (f"batch_{other}", "batch_abc", "batch_01", str(other), "batch_999999"):
            with pytest.raises(openai.NotFoundError) as caught:
                await call(client.batches.retrieve, unknown)
            refused(caught.value, 404)
        with pytest.raises(openai.BadRequestError) as caught:
            await call(client.batches.list, limit=101)
        refused(caught.value, 400, "limit")


async def test_files_list_retrieve_download_delete(database_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        first = await upload(client, line("a"))
        second = await upload(client, line("b"), purpose="user_data")
        third = await upload(client, line("c"), line("d"))
        assert (third.bytes, third.filename, third.purpose) == (
            len(line("c") + line("d")),
            "input.jsonl",
            "batch",
        )

        batch_files = await call(client.files.list, purpose="batch")
        assert [f.id for f in batch_files.data] == [third.id, first.id] and batch_files.has_more is False
        oldest = await call(client.files.list, order="asc", limit=2)
        assert [f.id for f in oldest.data] == [first.id, second.id] and oldest.has_more is True
        rest = await call(client.files.list, order="asc", limit=2, after=second.id)
        assert [f.id for f in rest.data] == [third.id] and rest.has_more is False
        assert [f.id for f in await call(lambda: list(client.files.list(limit=1)))] == [
            third.id,
            second.id,
            first.id,
        ]

        assert await call(client.files.retrieve, second.id) == second
        assert (await call(client.files.content, third.id)).content == line("c") + line("d")
        deleted = await call(client.files.delete, second.id)
        assert (deleted.id, deleted.object, deleted.deleted) == (second.id, "file", True)
        for gone in (lambda: client.files.retrieve(second.id), lambda: client.files.delete(second.id)):
            with pytest.raises(openai.NotFoundError) as caught:
                await call(gone)
            refused(caught.value, 404)

        with pytest.raises(openai.BadRequestError) as caught:
            await upload(client, line("e"), purpose="nonsense")
        refused(caught.value, 400, "purpose")


async def test_uploads_are_refused_as_openai_refuses_them(
    sqlite_url: str, start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        # A form with a file but no purpose (here after the file) is refused, and nothing kept.
        no_purpose = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n\r\n'
            + line("a")
            + b'\r\n--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nbatch\r\n--b--\r\n'
        )
        late = await app.client.post(
            "/v1/files", content=no_purpose, headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert late.status_code == 400 and late.json()["error"]["param"] == "purpose"
        form_without_file = await app.client.post("/v1/files", files={"purpose": (None, b"batch")})
        assert form_without_file.json()["error"]["param"] == "file"
        not_a_form = await app.client.post("/v1/files", json={"purpose": "batch"})
        assert not_a_form.status_code == 400 and not_a_form.headers["x-should-retry"] == "false"
        # Past the limit (made small here): 413, and nothing is kept.
        monkeypatch.setattr("app.api.openai.files.UPLOAD_MAX_BYTES", 10)
        with pytest.raises(openai.APIStatusError) as caught:
            await upload(client, line("a"))
        assert caught.value.status_code == 413 and caught.value.response.headers["x-should-retry"] == "false"
        assert (await call(client.files.list)).data == []


async def test_a_running_batch_is_cancelled(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    # Slow answers keep the batch unfinished while it is cancelled.
    inference.delay_seconds = 1.0
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        client = sdk(app)
        uploaded = await upload(client, line("a"), line("b"))
        created = await new_batch(client, uploaded.id)
        cancelling = await call(client.batches.cancel, created.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        cancelled = await until_status(client, created.id, "cancelled")
        assert cancelled.cancelled_at is not None and cancelled.completed_at is None
        assert cancelled.request_counts.total == 2  # type: ignore[union-attr]
        with pytest.raises(openai.ConflictError) as caught:
            await call(client.batches.cancel, created.id)
        refused(caught.value, 409)
        assert "x-should-retry" not in caught.value.response.headers


async def test_every_validation_failure_fails_the_batch_with_its_line(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        uploaded = await upload(
            client,
            line("ok"),
            b"{not json\n",
            json.dumps({"method": "POST", "url": ENDPOINT, "body": {"model": "stand-in"}}).encode() + b"\n",
            line("ok"),
            line("u", url="/v1/embeddings"),
            json.dumps({"custom_id": "m", "url": ENDPOINT, "body": {"messages": []}}).encode() + b"\n",
            line("two", model="another-model"),
            # NaN and Infinity are not JSON: Python reads them, and they were dropped silently.
            b'{"custom_id":"nan","method":"POST","url":"/v1/chat/completions","body":{"model":"stand-in",'
            b'"messages":[{"role":"user","content":"x"}],"temperature":NaN}}\n',
        )
        failed = await new_batch(client, uploaded.id)
        assert failed.status == "failed" and failed.failed_at is not None and failed.errors is not None
        assert failed.errors.object == "list"
        found = [(e.line, e.code, e.param) for e in failed.errors.data or []]
        assert found == [
            (2, "invalid_json_line", None),
            (3, "missing_required_parameter", "custom_id"),
            (4, "duplicate_custom_id", "custom_id"),
            (5, "mismatched_endpoint", "url"),
            (6, "missing_required_parameter", "body.model"),
            (7, "mismatched_model", "body.model"),
            (8, "invalid_json_line", None),
        ]
        Batch.model_validate(await raw(app, f"/v1/batches/{failed.id}"))


async def test_bad_create_parameters_answer_400_in_openai_shape(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        good = await upload(client, line("a"))
        other = await upload(client, line("a"), purpose="user_data")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"input_file_id": good.id, "completion_window": "48h"}, "completion_window"),
            ({"input_file_id": "file-unknown"}, "input_file_id"),
            ({"input_file_id": other.id}, "input_file_id"),
            ({"input_file_id": good.id, "endpoint": "/v1/images"}, "endpoint"),
            ({"input_file_id": good.id, "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ]
        for params, param in cases:
            arguments = {"endpoint": ENDPOINT, "completion_window": "24h", **params}
            with pytest.raises(openai.BadRequestError) as caught:
                await call(client.batches.create, **arguments)
            refused(caught.value, 400, param)
        assert (await call(client.batches.list)).data == []
