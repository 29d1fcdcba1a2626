"""The OpenAPI document describes what the endpoints really return: real answers are validated
against the response schemas it publishes, and each answers the status it is documented with.
Also pinned here: /api/batches paging, 405 on a wrong method, /health with the database gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from app.db.migrate import upgrade
from testkit import (
    RunningApp,
    StartApp,
    check,
    fast_settings,
    postgres_database,
    request_payload,
    wait_until,
)
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.tcp_proxy import TcpProxy


async def test_real_answers_match_the_published_schema(
    sqlite_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # A long delivery backoff keeps a failing redelivery queued for the rest of the test.
    settings = fast_settings(sqlite_url, inference.url + "/v1", delivery_retry_schedule="60s")
    async with start_app(settings) as app:
        document = (await app.client.get("/api/openapi.json")).json()
        assert document == (await app.client.get("/api/openapi")).json()
        await exercise(app, document, receiver)


async def exercise(app: RunningApp, document: dict[str, Any], receiver: WebhookReceiver) -> None:
    c = app.client
    body = {
        "custom_id": "doc-1",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        "delivery_config": {"type": "webhook", "webhook_url": receiver.url},
    }
    # The published request schema accepts what the API accepts.
    request_schema = {"$ref": "#/components/schemas/RequestIn", "components": document["components"]}
    Draft202012Validator(request_schema).validate(body)

    check(document, "/api/requests", "post", await c.post("/api/requests", json=body), 202)
    again = await c.post("/api/requests", json=body)
    check(document, "/api/requests", "post", again, 409, "duplicate_custom_id")
    invalid = await c.post("/api/requests", json={"custom_id": 1})
    check(document, "/api/requests", "post", invalid, 422)
    check(document, "/api/requests", "post", await c.post("/api/requests", content=b"{"), 400, "invalid_json")
    read = "/api/requests/{custom_id}"
    check(document, read, "get", await c.get("/api/requests/missing"), 404, "not_found")
    check(document, "/api/batches", "get", await c.get("/api/batches"), 200)
    bad_limit = await c.get("/api/batches?limit=0")  # its documented 400 schema is wrong: see below
    assert bad_limit.status_code == 400 and bad_limit.json()["errors"][0]["code"] == "bad_request"
    await receiver.wait_for(lambda r: len(r.successes()) == 1, timeout=20)

    async def delivered() -> bool:
        detail = (await c.get("/api/requests/doc-1")).json()
        return bool(detail["delivery"] and detail["delivery"]["status"] == "delivered")

    await wait_until(delivered, timeout=10, what="doc-1 delivered")
    detail = await c.get("/api/requests/doc-1")
    check(document, read, "get", detail, 200)
    batch_id = detail.json()["batch_id"]
    check(document, "/api/batches", "get", await c.get("/api/batches"), 200)
    listed = await c.get("/api/requests", params={"batch_id": batch_id, "delivery_status": "delivered"})
    check(document, "/api/requests", "get", listed, 200)
    assert [r["custom_id"] for r in listed.json()["data"]] == ["doc-1"]
    check(document, "/api/requests", "get", await c.get("/api/requests?status=nope"), 400, "bad_request")
    check(document, "/api/batches/{batch_id}", "get", await c.get(f"/api/batches/{batch_id}"), 200)
    check(document, "/api/batches/{batch_id}", "get", await c.get("/api/batches/999"), 404, "not_found")
    close = await c.post(f"/api/batches/{batch_id}/close")
    check(document, "/api/batches/{batch_id}/close", "post", close, 409, "batch_not_building")
    redeliver = "/api/requests/{custom_id}"
    check(document, redeliver, "post", await c.post("/api/requests/doc-1/redeliver"), 202)
    await receiver.wait_for(lambda r: len(r.successes()) == 2, timeout=20)
    await wait_until(delivered, timeout=10, what="doc-1 delivered again")
    check(document, redeliver, "post", await c.post("/api/requests/missing/redeliver"), 404, "not_found")
    finished = await c.post("/api/requests/doc-1/cancel")
    check(document, redeliver, "post", finished, 409, "request_finished")
    batch_path = "/api/batches/{batch_id}"
    cancel = await c.post(f"/api/batches/{batch_id}/cancel")
    check(document, batch_path + "/cancel", "post", cancel, 409, "batch_not_cancellable")
    retry = await c.post(f"/api/batches/{batch_id}/retry")
    check(document, batch_path + "/retry", "post", retry, 409, "batch_not_failed")
    receiver.status_for["doc-1"] = 503  # from now on its delivery stays queued (retrying)
    redeliver_all = await c.post(f"/api/batches/{batch_id}/redeliver?only=all")
    check(document, batch_path + "/redeliver", "post", redeliver_all, 202)
    assert redeliver_all.json() == {"batch_id": batch_id, "redelivered": 1}
    missing = await c.post("/api/batches/999/redeliver")
    check(document, batch_path + "/redeliver", "post", missing, 404, "not_found")
    removing = await c.delete(f"/api/batches/{batch_id}")  # its delivery is queued or retrying
    check(document, batch_path, "delete", removing, 409, "undelivered_results")
    health = await c.get("/health")
    check(document, "/health", "get", health, 200)
    assert (health.json()["status"], health.json()["database"]) == ("ok", "ok")


async def test_the_documented_400_of_list_batches_is_the_body_it_answers(
    sqlite_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        document = (await app.client.get("/api/openapi.json")).json()
        answer = await app.client.get("/api/batches", params={"limit": 0})
        check(document, "/api/batches", "get", answer, 400, "bad_request")


async def walk(app: RunningApp, limit: int, **params: Any) -> list[list[int]]:
    """Follow next_before_id from the first page to the end; returns each page's ids."""
    pages: list[list[int]] = []
    before: int | None = None
    while True:
        query = {"limit": limit, **params, **({"before_id": before} if before is not None else {})}
        answer = await app.client.get("/api/batches", params=query)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        pages.append([b["id"] for b in page["data"]])
        before = page["next_before_id"]
        if before is None:
            return pages
        assert before == pages[-1][-1]  # the cursor is the last id of the page
        assert len(pages) <= 20, "paging does not end"


async def test_batches_page_newest_first_without_duplicates_or_gaps(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", batch_max_requests=1)
    async with start_app(settings) as app:
        for n in range(7):
            payload = request_payload(f"page-{n}", {"type": "none"})
            assert (await app.client.post("/api/requests", json=payload)).status_code == 202

        async def all_done() -> bool:
            data = (await app.client.get("/api/batches", params={"limit": 500})).json()["data"]
            return len(data) == 7 and all(b["status"] == "done" for b in data)

        await wait_until(all_done, timeout=30, what="7 single-request batches done")
        everything = (await app.client.get("/api/batches", params={"limit": 500})).json()
        ids = [b["id"] for b in everything["data"]]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == 7  # newest first
        assert everything["next_before_id"] is None

        # 7 = 3 + 3 + 1: the short last page has no cursor.
        assert await walk(app, 3) == [ids[0:3], ids[3:6], ids[6:7]]
        # A full last page still carries a cursor; the page after it is empty.
        assert await walk(app, 7) == [ids, []]
        assert await walk(app, 1) == [[i] for i in ids] + [[]]
        # The status filter pages the same way; the default limit is 50.
        assert await walk(app, 2, status="done") == [ids[0:2], ids[2:4], ids[4:6], ids[6:7]]
        assert await walk(app, 2, status="failed") == [[]]
        default = (await app.client.get("/api/batches")).json()
        assert [b["id"] for b in default["data"]] == ids and default["next_before_id"] is None
        # before_id is exclusive and need not be an id of a listed batch.
        middle = (await app.client.get("/api/batches", params={"before_id": ids[2], "limit": 2})).json()
        assert [b["id"] for b in middle["data"]] == ids[3:5] and middle["next_before_id"] == ids[4]
        beyond = (await app.client.get("/api/batches", params={"before_id": ids[0] + 1000})).json()
        assert [b["id"] for b in beyond["data"]] == ids


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "before_id=abc"])
async def test_batches_paging_refuses_bad_parameters_with_400(
    sqlite_url: str, start_app: StartApp, query: str
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        answer = await app.client.get(f"/api/batches?{query}")
        assert answer.status_code == 400
        [error] = answer.json()["errors"]
        assert (error["code"], error["title"], error["source"]) == ("bad_request", "Bad request", {})
        assert (await app.client.get("/api/batches?limit=500")).status_code == 200
        assert (await app.client.get("/api/batches?limit=1")).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/requests", {"GET", "POST", "OPTIONS"}),
        ("DELETE", "/api/requests", {"GET", "POST", "OPTIONS"}),
        ("DELETE", "/api/requests/some-id", {"GET", "POST", "OPTIONS"}),
        ("POST", "/api/batches", {"GET", "OPTIONS"}),
        ("PUT", "/api/batches/1", {"GET", "DELETE", "OPTIONS"}),
        ("GET", "/api/batches/1/close", {"POST", "OPTIONS"}),
        ("POST", "/health", {"GET", "OPTIONS"}),
    ],
)
async def test_a_wrong_method_answers_405_in_the_error_shape(
    sqlite_url: str, start_app: StartApp, method: str, path: str, allowed: set[str]
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        answer = await app.client.request(method, path)
        assert answer.status_code == 405
        assert answer.headers["content-type"].startswith("application/json")
        assert {m.strip() for m in answer.headers["allow"].split(",")} == allowed
        assert answer.json() == {
            "errors": [
                {
                    "code": "method_not_allowed",
                    "title": "Method not allowed",
                    "detail": "Method Not Allowed",
                    "source": {},
                }
            ]
        }


async def test_health_answers_503_while_the_database_is_unreachable(start_app: StartApp) -> None:
    async with postgres_database() as direct_url:
        await asyncio.to_thread(upgrade, direct_url)
        async with TcpProxy("127.0.0.1", 5432) as proxy:
            proxied = direct_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
            async with start_app(fast_settings(proxied)) as app:
                document = (await app.client.get("/api/openapi.json")).json()
                health_schema = document["paths"]["/health"]["get"]["responses"]["200"]
                up = await app.client.get("/health")
                check(document, "/health", "get", up, 200)
                assert (up.json()["status"], up.json()["database"]) == ("ok", "ok")

                await proxy.pause()  # the database is gone: dropped sockets, refused connections
                down = await app.client.get("/health")
                assert down.status_code == 503
                assert down.json()["status"] == "degraded"
                assert down.json()["database"].startswith("error: ")
                assert down.json()["scheduler"] == "running"
                schema = health_schema["content"]["application/json"]["schema"]
                root = {**schema, "components": document["components"]}
                Draft202012Validator(root).validate(down.json())  # the body keeps the 200 shape

                await proxy.resume()

                async def healthy() -> bool:
                    return (await app.client.get("/health")).status_code == 200

                await wait_until(healthy, timeout=30, what="/health 200 once the database is back")
                assert (await app.client.get("/health")).json()["database"] == "ok"


async def test_the_503_of_health_is_a_documented_response(sqlite_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        document = (await app.client.get("/api/openapi.json")).json()
    assert "503" in document["paths"]["/health"]["get"]["responses"]


async def test_bulk_answers_match_the_published_schema(sqlite_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        c, path = app.client, "/api/requests/bulk"
        document = (await c.get("/api/openapi.json")).json()
        item = request_payload("doc-bulk-1", {"type": "none"})
        schema = {**document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]}
        Draft202012Validator({**schema, "components": document["components"]}).validate([item])
        mixed = await c.post(path, json=[item, {"custom_id": 1}, item])
        check(document, path, "post", mixed, 200)
        assert [r["status"] for r in mixed.json()["results"]] == ["pending", "rejected", "rejected"]
        jsonl = {"content-type": "application/x-ndjson"}
        check(document, path, "post", await c.post(path, content=b"{\n", headers=jsonl), 400, "invalid_json")
        check(document, path, "post", await c.post(path, json={}), 422, "not_an_array")
        plain = await c.post(path, content=b"[]", headers={"content-type": "text/plain"})
        check(document, path, "post", plain, 415, "unsupported_media_type")
