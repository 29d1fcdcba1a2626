"""The OpenAI face as OpenAI answers (issue 25): uploads in either part order, the default and
requested expiries of uploads and produced files, the `evals` purpose, error-file lines whose
error is in the response, request ids on every answer of both faces, the 50,000-input cap of an
embeddings batch and a `param` on every refused create. With the official SDKs where a client
calls it, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from anthropic import AsyncAnthropic
from openai import OpenAI

from testkit import RunningApp, StartApp, fast_settings
from testkit.openai_sdk import ENDPOINT, call, line, new_batch, sdk, until_status, upload
from testkit.properties import kept_files
from testkit.standins.inference import InferenceStandin

DAY = 24 * 3600
EMBEDDINGS = "/v1/embeddings"


def form(*parts: tuple[str, bytes, str | None]) -> tuple[bytes, dict[str, str]]:
    """A multipart body of (name, value, filename) parts in exactly this order."""
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--b\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return body + b"--b--\r\n", {"content-type": "multipart/form-data; boundary=b"}


def refused(exc: openai.APIStatusError, param: str) -> None:
    assert exc.status_code == 400, exc.response.text
    error = exc.response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error


def lifetime(file: Any) -> int | None:
    return None if file.expires_at is None else file.expires_at - file.created_at


async def test_an_upload_may_send_its_file_before_its_purpose(database_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        # local-batch-api's curl example: -F file=@in.jsonl -F purpose=batch, expiry after it too.
        body, headers = form(
            ("file", line("a"), "in.jsonl"),
            ("purpose", b"batch", None),
            ("expires_after[anchor]", b"created_at", None),
            ("expires_after[seconds]", b"7200", None),
        )
        taken = await app.client.post("/v1/files", content=body, headers=headers)
        assert taken.status_code == 200, taken.text
        stored = taken.json()
        assert (stored["purpose"], stored["filename"], stored["bytes"]) == (
            "batch",
            "in.jsonl",
            len(line("a")),
        )
        assert stored["expires_at"] - stored["created_at"] in (7199, 7200, 7201)
        client = sdk(app)
        assert (await call(client.files.content, stored["id"])).content == line("a")
        created = await new_batch(client, stored["id"])
        assert created.status == "validating"

        # A purpose after the file is still checked: bad or missing, nothing is kept.
        before = kept_files(app)
        for parts in (
            [("file", line("b"), "in.jsonl"), ("purpose", b"nonsense", None)],
            [("file", line("b"), "in.jsonl")],
            [
                ("file", line("b"), "in.jsonl"),
                ("purpose", b"batch", None),
                ("expires_after[seconds]", b"10", None),
            ],
        ):
            body, headers = form(*parts)  # type: ignore[arg-type]
            answer = await app.client.post("/v1/files", content=body, headers=headers)
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["param"] in ("purpose", "expires_after"), answer.text
        assert [f.id for f in (await call(client.files.list)).data] == [stored["id"]]
        assert kept_files(app) == before


async def test_batch_uploads_expire_after_30_days_and_evals_is_a_purpose(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        batch_file = await upload(client, line("a"))
        assert lifetime(batch_file) in (30 * DAY - 1, 30 * DAY, 30 * DAY + 1)
        assert lifetime(await call(client.files.retrieve, batch_file.id)) == lifetime(batch_file)
        asked = await call(
            client.files.create,
            file=("in.jsonl", line("a")),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 3600},
        )
        assert lifetime(asked) in (3599, 3600, 3601)
        # Other purposes are kept until deleted, as OpenAI keeps them.
        assert (await upload(client, line("a"), purpose="user_data")).expires_at is None
        evals = await upload(client, line("a"), purpose="evals")
        assert (evals.purpose, evals.expires_at) == ("evals", None)


async def finished_batch(app: RunningApp, inference: InferenceStandin, **extra: Any) -> Any:
    client = sdk(app)
    inference.status_for["bad"] = 400
    uploaded = await upload(client, line("good"), line("bad", user="bad"))
    created = await new_batch(client, uploaded.id, **extra)
    return await until_status(client, created.id, "completed")


async def test_output_expires_after_sets_the_produced_files_expiry(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        client = sdk(app)
        asked = {"anchor": "created_at", "seconds": 7200}
        done = await finished_batch(app, inference, output_expires_after=asked)
        for file_id in (done.output_file_id, done.error_file_id):
            produced = await call(client.files.retrieve, file_id)
            assert lifetime(produced) in (7199, 7200, 7201), produced
        # Without it, OpenAI's 30 days.
        default = await finished_batch(app, inference)
        assert lifetime(await call(client.files.retrieve, default.output_file_id)) in (
            30 * DAY - 1,
            30 * DAY,
            30 * DAY + 1,
        )

        good = await upload(client, line("a"))
        for value, param in (
            ({"anchor": "created_at", "seconds": 10}, "output_expires_after.seconds"),
            ({"anchor": "created_at", "seconds": 3599}, "output_expires_after.seconds"),
            ({"anchor": "created_at", "seconds": 2592001}, "output_expires_after.seconds"),
            ({"anchor": "created_at", "seconds": "3600"}, "output_expires_after.seconds"),
            ({"anchor": "created_at", "seconds": True}, "output_expires_after.seconds"),
            ({"anchor": "created_at"}, "output_expires_after.seconds"),
            ({"anchor": "expires_at", "seconds": 3600}, "output_expires_after.anchor"),
            ({"seconds": 3600}, "output_expires_after.anchor"),
            ("3600", "output_expires_after"),
        ):
            with pytest.raises(openai.BadRequestError) as caught:
                await new_batch(client, good.id, output_expires_after=value)
            refused(caught.value, param)
        # Accepted: the answer reads the batch back after its commit, and with the scheduler
        # running a busy machine may have submitted it already.
        accepted = await new_batch(client, good.id, output_expires_after=None)
        assert accepted.status in ("validating", "in_progress"), accepted


async def test_an_error_line_with_a_response_has_a_null_error(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        client = sdk(app)
        done = await finished_batch(app, inference)
        text = (await call(client.files.content, done.error_file_id)).text
        [bad] = [json.loads(x) for x in text.splitlines()]
        # OpenAI's shape: the server's answer is the response, its error inside the body.
        assert bad["custom_id"] == "bad" and bad["error"] is None, bad
        assert bad["response"]["status_code"] == 400 and bad["response"]["body"]["error"]["message"]


async def test_every_answer_of_both_faces_carries_a_request_id(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client: OpenAI = sdk(app)
        uploaded = await upload(client, line("a"))
        created = await new_batch(client, uploaded.id)
        retrieved = await call(client.batches.retrieve, created.id)
        ids = [uploaded._request_id, created._request_id, retrieved._request_id]
        assert all(i and i.startswith("req_") for i in ids) and len(set(ids)) == 3, ids
        with pytest.raises(openai.NotFoundError) as caught:
            await call(client.batches.retrieve, "batch_999999")
        assert (caught.value.request_id or "").startswith("req_")

        anthropic = AsyncAnthropic(base_url=app.url, api_key="x", max_retries=0)
        entry = {"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": []}}
        batch = await anthropic.messages.batches.create(requests=[entry])  # type: ignore[list-item]
        again = await anthropic.messages.batches.retrieve(batch.id)
        assert batch._request_id and again._request_id and batch._request_id != again._request_id
        assert (await app.client.get("/v1/messages/batches/msgbatch_0")).headers["request-id"]
        # Only the faces: the native API is not the SDKs' and says nothing of it.
        assert "x-request-id" not in (await app.client.get("/api/batches")).headers


async def test_every_answer_carries_a_request_id_when_a_key_is_refused(
    sqlite_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False, api_keys="k" * 32)) as app:
        with pytest.raises(openai.AuthenticationError) as caught:
            await call(sdk(app).batches.list)
        assert (caught.value.request_id or "").startswith("req_")
        refusal = await app.client.get("/v1/messages/batches")
        assert refusal.status_code == 401 and refusal.headers["request-id"].startswith("req_")


def embeddings_line(custom_id: str, inputs: Any) -> bytes:
    record = {
        "custom_id": custom_id,
        "method": "POST",
        "url": EMBEDDINGS,
        "body": {"model": "e", "input": inputs},
    }
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


async def test_an_embeddings_batch_holds_at_most_50000_inputs(database_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client = sdk(app)

        async def batch_of(*lines: bytes) -> Any:
            uploaded = await upload(client, *lines)
            return await call(
                client.batches.create, input_file_id=uploaded.id, endpoint=EMBEDDINGS, completion_window="24h"
            )

        # A string is one input, a token array is one, a list holds one per item.
        exactly = await batch_of(
            embeddings_line("a", ["x"] * 49_996), embeddings_line("b", "x"), embeddings_line("c", [1, 2, 3]),
            embeddings_line("d", [[1, 2], [3]]),
        )  # fmt: skip
        assert exactly.status == "validating", exactly.errors
        over = await batch_of(embeddings_line("a", ["x"] * 49_999), embeddings_line("b", ["x", "y"]))
        assert over.status == "failed" and over.errors is not None
        assert [(e.line, e.code, e.param) for e in over.errors.data or []] == [
            (2, "too_many_embedding_inputs", "body.input")
        ]
        # Not an embeddings batch: its lines' inputs are not counted.
        chat = await new_batch(client, (await upload(client, line("a", input=["x"] * 50_001))).id)
        assert chat.status == "validating", chat.errors


async def test_every_refused_create_names_its_param(database_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        good = await upload(client, line("a"))
        other = await upload(client, line("a"), purpose="user_data")
        for arguments, param in (
            ({"input_file_id": good.id, "endpoint": "/v1/images"}, "endpoint"),
            ({"input_file_id": other.id, "endpoint": ENDPOINT}, "input_file_id"),
            ({"input_file_id": "", "endpoint": ENDPOINT}, "input_file_id"),
            ({"input_file_id": good.id, "endpoint": ""}, "endpoint"),
        ):
            with pytest.raises(openai.BadRequestError) as caught:
                await call(client.batches.create, completion_window="24h", **arguments)
            refused(caught.value, param)
        assert (await call(client.batches.list)).data == []
