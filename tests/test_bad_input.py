"""Bad input gets a clear 4xx, never a 500, on both databases (issue 13 item 11): ids beyond
int64, JSON nested too deeply, and text no database stores (NUL, unpaired surrogates)."""

from __future__ import annotations

import json

import pytest

from tests.support import StartApp, fast_settings

HUGE = "9" * 20
REQUEST = '{"custom_id":"%s","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"%s"}]},"delivery_config":{"type":"none"}}'  # noqa: E501


@pytest.mark.parametrize(
    "path",
    [
        f"/api/batches/{HUGE}",
        "/api/batches/9223372036854775808",
        f"/api/batches?before_id={HUGE}",
        f"/batches/{HUGE}",
        f"/requests/{HUGE}",
    ],
)
async def test_ids_beyond_int64_are_refused_as_bad_input(
    database_url: str, start_app: StartApp, path: str
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        answer = await app.client.get(path)
        assert answer.status_code == 400, answer.text
        ui = (await app.client.post(f"/batches/{HUGE}/cancel")).status_code
        assert ui == 400


async def test_text_no_database_stores_is_refused_and_nothing_is_kept(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        for custom_id, content in (
            ("nul", "a\\u0000b"),
            ("lone", "\\ud800"),
            ("low", "x\\udc00"),
            ("key", "ok"),
        ):
            raw = REQUEST % (custom_id, content)
            if custom_id == "key":
                raw = raw.replace('"role"', '"ro\\u0000le"')
            answer = await app.client.post(
                "/api/requests", content=raw, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 422, answer.text
            [error] = answer.json()["errors"]
            assert error["code"] == "invalid_text" and error["source"]["pointer"].startswith(
                "/body/messages/0/"
            )
            assert (await app.client.get(f"/api/requests/{custom_id}")).status_code == 404
        # An escaped surrogate pair is a valid character: accepted and kept exactly.
        emoji = REQUEST % ("emoji", "smile \\ud83d\\ude00")
        assert (
            await app.client.post(
                "/api/requests", content=emoji, headers={"content-type": "application/json"}
            )
        ).status_code == 202
        kept = (await app.client.get("/api/requests/emoji")).json()["body"]["messages"][0]["content"]
        assert kept == "smile \U0001f600"


async def test_json_nested_too_deeply_is_refused(database_url: str, start_app: StartApp) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        answer = await app.client.post(
            "/api/requests",
            content=REQUEST.replace('"%s"}]', deep + "}]") % "deep",
            headers={"content-type": "application/json"},
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["errors"][0]["code"] == "invalid_json"
        assert json.loads(answer.text)["errors"][0]["title"] == "Body nested too deeply"


async def test_the_dropin_faces_refuse_unstorable_text_in_their_shape(
    database_url: str, start_app: StartApp
) -> None:
    line = '{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"%s"}]}}\n'  # noqa: E501
    entry = '{"requests":[{"custom_id":"a","params":{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"%s"}]}}]}'  # noqa: E501
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        c = app.client
        uploaded = await c.post(
            "/v1/files", files={"file": ("x.jsonl", (line % "a\\u0000b").encode())}, data={"purpose": "batch"}
        )
        created = await c.post(
            "/v1/batches",
            json={
                "input_file_id": uploaded.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        assert created.status_code == 200 and created.json()["status"] == "failed"
        [error] = created.json()["errors"]["data"]
        assert (error["code"], error["line"], error["param"]) == (
            "invalid_text",
            1,
            "body.messages.0.content",
        )

        refused = await c.post(
            "/v1/messages/batches", content=entry % "a\\u0000b", headers={"content-type": "application/json"}
        )
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error"
        assert "requests.0.params.messages.0.content" in refused.json()["error"]["message"]
