"""The Anthropic face driven by the official SDK, unchanged but for base_url and api_key, on SQLite
and PostgreSQL: Message Batches run on the local backend (the inference stand-in), come back as
Anthropic results, page, cancel and delete as the SDK expects, and refuse bad input in Anthropic's
error shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import httpx
import pytest
from anthropic.types import Message
from anthropic.types.messages import MessageBatch
from sqlalchemy import select

from app.api.anthropic.schemas import batch_id_of
from app.core.dropin import create, file_store
from app.core.dropin.anthropic import from_body
from app.core.rules.errors import TooLarge
from app.db.models import Batch, Request
from testkit import RunningApp, StartApp, fast_settings, wait_until
from testkit.anthropic_sdk import ended, entry, refused, results_of, sdk
from testkit.standins.inference import InferenceStandin

FORWARDED = {"x-forwarded-proto": "https", "x-forwarded-host": "gw.example", "x-forwarded-prefix": "/llm/"}


async def test_a_batch_runs_and_its_results_are_anthropic_results(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    inference.status_for["bad"] = 400
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        client = sdk(app)
        created = await client.messages.batches.create(
            requests=[entry("a"), entry("b-2"), entry("bad")]  # type: ignore[list-item]
        )
        assert created.id.startswith("msgbatch_") and created.type == "message_batch"
        assert (created.processing_status, created.results_url, created.ended_at) == (
            "in_progress",
            None,
            None,
        )
        assert created.request_counts.processing + created.request_counts.succeeded == 3

        batch = await ended(client, created.id)
        raw = (await app.client.get(f"/v1/messages/batches/{batch.id}")).json()
        assert set(raw) == set(MessageBatch.model_fields)
        assert raw["archived_at"] is None and raw["created_at"].endswith("Z")
        assert batch.ended_at is not None and batch.expires_at > batch.created_at
        assert batch.cancel_initiated_at is None
        assert batch.request_counts.model_dump() == {
            "processing": 0,
            "succeeded": 2,
            "errored": 1,
            "canceled": 0,
            "expired": 0,
        }
        assert batch.results_url == f"{app.url}/v1/messages/batches/{batch.id}/results"

        results = await results_of(client, batch.id)
        assert sorted(results) == ["a", "b-2", "bad"]
        for custom_id in ("a", "b-2"):
            result = results[custom_id].result
            assert result.type == "succeeded"
            assert result.message.content[0].text == f"echo: {custom_id}"  # type: ignore[union-attr]
        errored = results["bad"].result
        assert errored.type == "errored" and errored.error.error.type == "invalid_request_error"

        download = await app.client.get(batch.results_url)
        assert download.headers["content-type"].startswith("application/x-jsonl")
        lines = [httpx.Response(200, content=line).json() for line in download.content.splitlines()]
        message = next(line["result"]["message"] for line in lines if line["custom_id"] == "a")
        assert set(Message.model_fields) <= set(message), set(Message.model_fields) - set(message)
        Message.model_validate(message)


async def test_batches_page_newest_first_both_ways_with_has_more_exact(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        b1, b2, b3 = [(await client.messages.batches.create(requests=[entry("x")])).id for _ in range(3)]  # type: ignore[list-item]

        first = await client.messages.batches.list(limit=2)
        assert ([b.id for b in first.data], first.has_more) == ([b3, b2], True)
        assert (first.first_id, first.last_id) == (b3, b2)
        rest = await client.messages.batches.list(limit=2, after_id=b2)
        assert ([b.id for b in rest.data], rest.has_more) == ([b1], False)
        newer = await client.messages.batches.list(limit=1, before_id=b1)
        assert ([b.id for b in newer.data], newer.has_more) == ([b2], True)
        newest = await client.messages.batches.list(limit=2, before_id=b2)
        assert ([b.id for b in newest.data], newest.has_more) == ([b3], False)

        assert [b.id async for b in client.messages.batches.list(limit=2)] == [b3, b2, b1]
        assert [b.id async for b in client.messages.batches.list(limit=1, before_id=b1)] == [b2, b3]
        empty = await client.messages.batches.list(after_id=b1)
        assert (empty.data, empty.has_more, empty.first_id, empty.last_id) == ([], False, None, None)

        for query in ("limit=0", "limit=1001", "after_id=nope", f"after_id={b1}&before_id={b2}"):
            refused(await app.client.get(f"/v1/messages/batches?{query}"), 400, "invalid_request_error")
        for missing in ("msgbatch_999", "msgbatch_01", "msgbatch_x", "1"):
            refused(await app.client.get(f"/v1/messages/batches/{missing}"), 404, "not_found_error")
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.batches.retrieve("msgbatch_999")


async def test_a_cancel_while_running_ends_the_rest_canceled_and_an_ended_batch_deletes(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    inference.delay_seconds = 0.5
    settings = fast_settings(database_url, inference.url + "/v1", local_concurrency=1)
    async with start_app(settings) as app:
        client = sdk(app)
        batch = await client.messages.batches.create(
            requests=[entry(f"r{i}") for i in range(5)]  # type: ignore[misc]
        )
        await wait_until(lambda: inference.calls, timeout=10, what="the first request reached the stand-in")
        path = f"/v1/messages/batches/{batch.id}"
        refused(await app.client.get(path + "/results"), 400, "invalid_request_error")
        refused(await app.client.delete(path), 400, "invalid_request_error")

        canceling = await client.messages.batches.cancel(batch.id)
        assert canceling.processing_status in ("canceling", "ended")
        assert canceling.cancel_initiated_at is not None
        assert (await client.messages.batches.cancel(batch.id)).id == batch.id  # twice is fine

        done = await ended(client, batch.id)
        counts = done.request_counts
        assert counts.canceled >= 3 and counts.processing == 0
        assert counts.canceled + counts.succeeded == 5
        kinds = [r.result.type for r in (await results_of(client, batch.id)).values()]
        assert kinds.count("canceled") == counts.canceled and len(kinds) == 5

        deleted = await client.messages.batches.delete(batch.id)
        assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
        refused(await app.client.get(path), 404, "not_found_error")


async def test_bad_requests_are_refused_whole_in_anthropic_shape(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        client = sdk(app)
        no_max_tokens = entry("ok")
        del no_max_tokens["params"]["max_tokens"]
        bad = [entry("has space"), entry("dup"), entry("dup"), no_max_tokens]
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.batches.create(requests=bad)  # type: ignore[arg-type]
        response = caught.value.response
        message = refused(response, 400, "invalid_request_error")["error"]["message"]
        for where in ("requests.0.custom_id", "requests.2.custom_id", "requests.3.params.max_tokens"):
            assert where in message, message

        refused(await app.client.post("/v1/messages/batches", content=b"{nope"), 400, "invalid_request_error")
        refused(
            await app.client.post("/v1/messages/batches", json={"requests": []}), 400, "invalid_request_error"
        )
        assert (await client.messages.batches.list()).data == []
        # The native API keeps its own error shape.
        assert "errors" in (await app.client.get("/api/batches/999")).json()


async def test_the_api_prefix_mount_and_forwarded_headers_shape_results_url(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", forwarded_allow_ips="127.0.0.1")
    async with start_app(settings) as app:
        client = sdk(app, "/api/anthropic")
        batch = await ended(client, (await client.messages.batches.create(requests=[entry("p")])).id)  # type: ignore[list-item]
        assert batch.results_url == f"{app.url}/api/anthropic/v1/messages/batches/{batch.id}/results"
        assert [r.result.type for r in (await results_of(client, batch.id)).values()] == ["succeeded"]

        for mount in ("/api/anthropic/v1", "/v1"):
            seen = (await app.client.get(f"{mount}/messages/batches/{batch.id}", headers=FORWARDED)).json()
            assert seen["results_url"] == f"https://gw.example/llm{mount}/messages/batches/{batch.id}/results"
        refused(await app.client.get("/api/anthropic/v1/messages/batches/msgbatch_0"), 404, "not_found_error")


async def test_every_base_url_the_sdk_may_be_given_runs_a_batch(
    sqlite_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    """The server, its /v1, the face's prefix and the prefix's /v1: the SDK appends
    /v1/messages/batches to each, and each serves the batches and their results."""
    async with start_app(fast_settings(sqlite_url, inference.url + "/v1")) as app:
        for prefix in ("", "/v1", "/api/anthropic", "/api/anthropic/v1"):
            client = sdk(app, prefix)
            created = await client.messages.batches.create(requests=[entry("at" + prefix.replace("/", "_"))])  # type: ignore[list-item]
            batch = await ended(client, created.id)
            assert batch.results_url == f"{app.url}{prefix}/v1/messages/batches/{batch.id}/results"
            assert created.id in [b.id async for b in client.messages.batches.list()], prefix
            assert [r.result.type for r in (await results_of(client, batch.id)).values()] == ["succeeded"]
            assert (await client.messages.batches.delete(batch.id)).id == batch.id


async def results_url_seen(app: RunningApp, batch_id: str, headers: dict[str, str]) -> str:
    url = (await app.client.get(f"/v1/messages/batches/{batch_id}", headers=headers)).json()["results_url"]
    assert isinstance(url, str)
    return url


async def test_forwarded_headers_count_only_from_a_listed_proxy(
    sqlite_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    """Issue 29: any client could send X-Forwarded-Host and be handed result links to its own
    host. Only a peer FORWARDED_ALLOW_IPS lists (none by default) is believed, behind uvicorn
    as `batchgate serve` runs it, and a forwarded host that is no host[:port] is ignored."""
    settings = fast_settings(sqlite_url, inference.url + "/v1")
    async with start_app(settings) as app:
        client = sdk(app)
        batch = await ended(client, (await client.messages.batches.create(requests=[entry("f")])).id)  # type: ignore[list-item]
        path = f"/v1/messages/batches/{batch.id}/results"
        # The test client connects from 127.0.0.1, which nothing lists: its headers change nothing,
        # on the face or on the batch's UI page.
        assert await results_url_seen(app, batch.id, FORWARDED) == app.url + path
        page = await app.client.get(f"/batches/{batch_id_of(batch.id)}", headers=FORWARDED)
        assert f"<code>{app.url}{path}</code>" in page.text
    async with start_app(settings.model_copy(update={"forwarded_allow_ips": "10.0.0.0/8, fd00::/8"})) as app:
        assert await results_url_seen(app, batch.id, FORWARDED) == app.url + path  # another proxy listed

    async with start_app(settings.model_copy(update={"forwarded_allow_ips": "10.9.9.9,127.0.0.0/8"})) as app:
        # A listed proxy names the client in X-Forwarded-For, as proxies do: still believed.
        proxied = {**FORWARDED, "x-forwarded-for": "203.0.113.9"}
        assert await results_url_seen(app, batch.id, proxied) == "https://gw.example/llm" + path
        page = await app.client.get(f"/batches/{batch_id_of(batch.id)}", headers=proxied)
        assert "<code>https://gw.example/llm/v1/messages/batches/" in page.text
        own = app.url.removeprefix("http://")
        for bad in ("evil.example/x", "user@evil.example", "evil example", "evil.example:99999", "@"):
            seen = await results_url_seen(app, batch.id, {**proxied, "x-forwarded-host": bad})
            assert seen == f"https://{own}/llm{path}", bad
        weird = {**proxied, "x-forwarded-proto": "javascript", "x-forwarded-prefix": "llm?x"}
        assert await results_url_seen(app, batch.id, weird) == f"http://gw.example{path}"


def spool_of(app: RunningApp) -> Path:
    """Where a create's body is spooled while it is read (DATA_DIR's temporary folder)."""
    return Path(app.settings.data_dir) / file_store.TEMP_DIR


def spooled_now(app: RunningApp) -> list[Path]:
    return list(spool_of(app).glob("*")) if spool_of(app).exists() else []


async def post_in_parts(app: RunningApp, *parts: bytes) -> httpx.Response:
    """POST a create whose last part is sent only once the server holds the body in a temporary
    file: a server that read the body whole first would wait for it forever (the wait fails)."""

    async def body() -> AsyncIterator[bytes]:
        for part in parts[:-1]:
            yield part
        await wait_until(lambda: spooled_now(app), timeout=10, what="the body spooled while it arrives")
        yield parts[-1]

    return await app.client.post(
        "/v1/messages/batches", content=body(), headers={"content-type": "application/json"}
    )


async def test_the_body_streams_to_a_temporary_file_gone_after_every_outcome(
    sqlite_url: str, start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        good = json.dumps({"requests": [entry("a"), entry("b")]}).encode()
        created = await post_in_parts(app, good[:20], good[20:])
        assert created.status_code == 200, created.text
        assert created.json()["request_counts"]["processing"] == 2
        assert spooled_now(app) == []

        not_json = await post_in_parts(app, good[:20], b"{nope")
        refused(not_json, 400, "invalid_request_error")
        assert spooled_now(app) == []
        invalid = json.dumps({"requests": [entry("has space")]}).encode()
        message = refused(await post_in_parts(app, invalid[:20], invalid[20:]), 400, "invalid_request_error")
        assert "requests.0.custom_id" in message["error"]["message"]
        assert spooled_now(app) == []

        # Past the limit (made small here): 413 in Anthropic's shape, nothing kept or created.
        monkeypatch.setattr("app.api.anthropic.batches.MAX_BODY_BYTES", len(good) - 1)
        refused(await post_in_parts(app, good[:20], good[20:]), 413, "request_too_large")
        assert spooled_now(app) == []
        assert len((await app.client.get("/v1/messages/batches")).json()["data"]) == 1


async def test_a_body_past_the_limit_is_refused_before_the_rest_is_read(
    sqlite_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        sent: list[int] = []

        async def body() -> AsyncIterator[bytes]:
            for i in range(10):
                sent.append(i)
                yield b" " * 100

        with pytest.raises(TooLarge):
            await from_body(app.db, app.settings.data_dir, body(), 250, None, lambda model: "local")
        assert sent == [0, 1, 2] and spooled_now(app) == []


async def test_params_round_trip_exactly_through_a_list_longer_than_an_insert_chunk(
    database_url: str, start_app: StartApp
) -> None:
    params = {
        "model": "stand-in",
        "max_tokens": 9_007_199_254_740_993,  # past a double's exact integers: must stay an int
        "temperature": 0.7,
        "top_p": 1.0,
        "stop_sequences": ["\n\nHuman:", "</s>"],
        "metadata": {"user_id": "ünï 中文 🌍", "nested": [{"a": [1, -2.5e-7, None, True, {}]}]},
        "messages": [{"role": "user", "content": [{"type": "text", "text": 'say "hi"\t\\ é'}]}],
    }
    count = create.INSERT_CHUNK * 2 + 345
    entries = [{"custom_id": f"r{i}", "params": params | {"model": f"m{i % 2}"}} for i in range(count)]
    # Raw UTF-8 and \u escapes both: the body must decode to the same strings either way.
    body = b'{"requests": [' + json.dumps(entries[0]).encode()
    body += b"".join(b"," + json.dumps(e, ensure_ascii=False).encode() for e in entries[1:]) + b"]}"
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        answer = await app.client.post("/v1/messages/batches", content=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["request_counts"]["processing"] == count
        batch_id = batch_id_of(answer.json()["id"])
        async with app.db.transaction() as session:
            batch = await session.get(Batch, batch_id)
            rows = (await session.execute(select(Request).where(Request.batch_id == batch_id))).scalars()
            stored = {r.custom_id: (r.body, r.model) for r in rows}
        assert batch is not None and (batch.model, batch.request_count) == ("several", count)
        assert len(stored) == count
        for e in (entries[0], entries[1], entries[-1]):
            body_back, model = stored[e["custom_id"]]
            assert body_back == e["params"] and model == e["params"]["model"]
            assert type(body_back["temperature"]) is float and type(body_back["top_p"]) is float
            assert type(body_back["max_tokens"]) is int


async def test_only_the_top_level_requests_list_holds_entries(sqlite_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:

        async def create_raw(body: bytes) -> httpx.Response:
            return await app.client.post("/v1/messages/batches", content=body)

        good = json.dumps(entry("a")).encode()
        # Keys whose values carry an entry's path, beside the real list: not entries.
        decoys = b'{"requests.item": {"custom_id": "x y"}, "": {"requests": [7]}, "requests": [%s]}' % good
        created = await create_raw(decoys)
        assert created.status_code == 200 and created.json()["request_counts"]["processing"] == 1
        for wrong in (
            b'{"requests": {"item": %s}}' % good,  # an object with a key "item" is not a list
            b"[%s]" % good,  # no top-level object
            b'{"requests": [%s], "requests": [%s]}' % (good, good),  # which list is meant?
        ):
            refused(await create_raw(wrong), 400, "invalid_request_error")
        refused(await create_raw(b'{"requests": [%s]} trailing' % good), 400, "invalid_request_error")
        assert len((await app.client.get("/v1/messages/batches")).json()["data"]) == 1
