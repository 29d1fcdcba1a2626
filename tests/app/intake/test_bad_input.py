"""Bad input gets a clear 4xx, never a 500, on both databases (issue 13 item 11): ids beyond
int64, JSON nested too deeply, and text no database stores (NUL, unpaired surrogates)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from testkit import StartApp, fast_settings

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


NATIVE, OPENAI, ANTHROPIC = "native", "openai", "anthropic"


def refused_in_shape(answer: Any, status: int, face: str) -> str:
    """Assert `answer` is `status` in `face`'s error shape; returns its message."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    if face == NATIVE:
        return str(body["errors"][0]["detail"])
    if face == OPENAI:
        return str(body["error"]["message"])
    assert body["type"] == "error"
    return str(body["error"]["message"])


JSON_ROUTES = [("/api/requests", NATIVE), ("/v1/batches", OPENAI), ("/v1/messages/batches", ANTHROPIC)]


@pytest.mark.parametrize(("path", "face"), JSON_ROUTES)
async def test_json_routes_refuse_what_is_not_json_in_their_shape(
    database_url: str, start_app: StartApp, path: str, face: str
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        c = app.client
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            answer = await c.post(path, content=b"{}", headers={"content-type": content_type})
            assert "application/json" in refused_in_shape(answer, 415, face)
        as_json = {"content-type": "application/json"}
        for body in (b"{nope", b'{"a": "\xff\xfe"}', b"[" * 100_000 + b"]" * 100_000):
            refused_in_shape(await c.post(path, content=body, headers=as_json), 400, face)
        nul = b'{"custom_id": "a\\u0000", "input_file_id": "a\\u0000", "requests": "a\\u0000"}'
        assert (await c.post(path, content=nul, headers=as_json)).status_code in (400, 422)


async def test_nul_and_bytes_not_utf8_in_a_path_or_query_are_400_in_each_shape(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        c = app.client
        for url, face in (
            ("/api/requests/a%00b", NATIVE),
            ("/api/requests/a%FFb", NATIVE),
            ("/api/batches?status=a%00", NATIVE),
            ("/v1/files?after=%3B%0D%00&limit=6", OPENAI),
            ("/v1/files/file-%00", OPENAI),
            ("/v1/messages/batches?after_id=%ED%A0%80", ANTHROPIC),
            ("/v1/messages/batches/msgbatch_1%00", ANTHROPIC),
        ):
            refused_in_shape(await c.get(url), 400, face)
        openai = (await c.get("/v1/files?after=a%00")).json()["error"]
        assert openai["param"] == "after"


async def test_an_anthropic_list_nested_deep_or_with_huge_keys_is_refused_cheaply(
    database_url: str, start_app: StartApp
) -> None:
    # ijson's prefixed parse took 23 GB for 200 kB of "[" before the bounds were checked first.
    headers = {"content-type": "application/json"}
    entry = {"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": []}}
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        c = app.client
        deep = b'{"requests": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        answer = await c.post("/v1/messages/batches", content=deep, headers=headers)
        assert "nested" in refused_in_shape(answer, 400, ANTHROPIC)
        long_key = json.dumps({"requests": [{**entry, "params": {**entry["params"], "k" * 2000: 1}}]})
        answer = await c.post("/v1/messages/batches", content=long_key, headers=headers)
        assert "key" in refused_in_shape(answer, 400, ANTHROPIC)
        bad_tokens = json.dumps({"requests": [{**entry, "params": {**entry["params"], "max_tokens": "5"}}]})
        answer = await c.post("/v1/messages/batches", content=bad_tokens, headers=headers)
        assert "max_tokens" in refused_in_shape(answer, 400, ANTHROPIC)


async def test_a_body_over_the_limit_is_413_in_each_shape(sqlite_url: str, start_app: StartApp) -> None:
    settings = fast_settings(sqlite_url, scheduler_enabled=False, api_max_body_bytes=1024)
    async with start_app(settings) as app:
        big = b'{"x": "' + b"x" * 4096 + b'"}'
        for path, face in JSON_ROUTES[:2]:
            answer = await app.client.post(path, content=big, headers={"content-type": "application/json"})
            refused_in_shape(answer, 413, face)


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/batches/1", "DELETE, GET, OPTIONS"),
        ("/api/requests/a/b", "GET, OPTIONS, POST"),
        ("/v1/files", "GET, OPTIONS, POST"),
        ("/v1/files/file-1", "DELETE, GET, OPTIONS"),
        ("/v1/messages/batches", "GET, OPTIONS, POST"),
        ("/v1/messages/batches/msgbatch_1", "DELETE, GET, OPTIONS"),
    ],
)
async def test_options_and_405_name_every_method_of_the_path(
    sqlite_url: str, start_app: StartApp, path: str, methods: str
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        options = await app.client.options(path)
        assert options.status_code == 204 and options.headers["allow"] == methods
        wrong = await app.client.put(path)
        assert wrong.status_code == 405
        assert sorted(m.strip() for m in wrong.headers["allow"].split(",")) == methods.split(", ")


async def test_nan_and_infinity_are_not_json(database_url: str, start_app: StartApp) -> None:
    # Python's json reads them; no JSON parser (nor backend) does, so they are refused, not stored.
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        for n, constant in enumerate(["NaN", "Infinity", "-Infinity"]):
            body = REQUEST.replace('"messages"', f'"temperature": {constant}, "messages"') % (f"nan-{n}", "x")
            answer = await app.client.post(
                "/api/requests", content=body, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 400, (constant, answer.text)
            assert (
                answer.json()["errors"][0]["code"] == "invalid_json" and constant.lstrip("-") in answer.text
            )
            assert (await app.client.get(f"/api/requests/nan-{n}")).status_code == 404
