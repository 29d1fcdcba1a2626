"""POST /api/requests/bulk: a JSON array or JSONL of requests, each checked as POST /api/requests
checks it, answered per item in order (partial success), duplicates within the body and against
stored rows, whole-body refusals (400 with the line, 413, 415, 422) that store nothing, and the
accepted rows going through the pipeline. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import json
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy import func, select

from app.core import owner_limits
from app.core.intake import bulk, bulk_store
from app.core.intake.accept import validate
from app.core.rules.errors import InvalidInput, TooMany
from app.core.rules.owners import Caller
from app.core.runs.lines import input_line
from app.db.models import Request
from app.ground import metrics
from app.ground.clock import utcnow
from testkit import NO_DELIVERY, RunningApp, StartApp, fast_settings, request_payload, webhook
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

BULK = "/api/requests/bulk"
HOOK = "https://example.com/hook"


def item(custom_id: str, **changes: Any) -> dict[str, Any]:
    return {**request_payload(custom_id, webhook(HOOK)), **changes}


def jsonl(items: list[Any]) -> bytes:
    return b"\n".join(json.dumps(i).encode() for i in items) + b"\n"


@pytest.fixture
async def api(database_url: str, start_app: StartApp) -> RunningApp:
    # No scheduler: intake alone, nothing moves underneath the assertions.
    settings = fast_settings(database_url, scheduler_enabled=False, batch_max_bytes=4096)
    async with start_app(settings) as app:
        yield app


async def stored(app: RunningApp) -> dict[str, str]:
    """custom_id: model of every stored request."""
    async with app.db.transaction() as session:
        return dict((await session.execute(select(Request.custom_id, Request.model))).tuples().all())


@pytest.mark.parametrize("form", ["json", "jsonl"])
async def test_every_item_is_accepted_and_answered_in_order(api: RunningApp, form: str) -> None:
    items = [item(f"{form}-{i}") for i in range(5)]
    if form == "json":
        answer = await api.client.post(BULK, json=items)
    else:
        headers = {"content-type": "application/x-ndjson"}
        answer = await api.client.post(BULK, content=jsonl(items), headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (5, 0)
    assert [(r["index"], r["custom_id"], r["status"]) for r in body["results"]] == [
        (i, f"{form}-{i}", "pending") for i in range(5)
    ]
    ids = [r["id"] for r in body["results"]]
    assert len(set(ids)) == 5
    detail = (await api.client.get(f"/api/requests/{form}-3")).json()
    assert (detail["id"], detail["status"], detail["body"]) == (ids[3], "pending", items[3]["body"])
    assert detail["delivery_config"] == {"type": "webhook", "webhook_url": HOOK}


async def test_valid_items_are_stored_when_others_are_rejected(api: RunningApp) -> None:
    items = [
        item("ok-0"),
        item("bad-1", delivery_config={"type": "webhook", "webhook_url": "ftp://x/y"}),
        item("bad-2", body={"messages": []}, extra=1),
        "not an object",
        item("ok-4", body={"model": "m", "messages": [{"content": "x" * 5000}]}),  # > BATCH_MAX_BYTES
        item("ok-5", body={"model": "m", "text": "nul \u0000 here"}),
        item("ok-6"),
    ]
    answer = await api.client.post(BULK, json=items)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (2, 5)
    results = body["results"]
    assert [r["status"] for r in results] == ["pending", *["rejected"] * 5, "pending"]
    pointers = [sorted((e["code"], e["source"]["pointer"]) for e in r.get("errors", [])) for r in results]
    assert pointers[1:6] == [
        [("invalid_webhook_url", "/1/delivery_config/webhook_url")],
        [("missing_model", "/2/body/model"), ("unknown_field", "/2/extra")],
        [("invalid_value", "/3")],
        [("request_too_large", "/4/body")],
        [("invalid_text", "/5/body/text")],
    ]
    assert [r.get("custom_id") for r in results] == ["ok-0", "bad-1", "bad-2", None, "ok-4", "ok-5", "ok-6"]
    assert all(e["title"] and e["detail"] for r in results for e in r.get("errors", []))
    assert sorted(await stored(api)) == ["ok-0", "ok-6"]


async def test_duplicates_in_the_body_and_with_stored_requests(api: RunningApp) -> None:
    assert (await api.client.post("/api/requests", json=item("same"))).status_code == 202
    assert (await api.client.post("/api/requests", json=item("other"))).status_code == 202
    changed = item("other")
    changed["body"] = {"model": "another-model"}
    items = [item("same"), changed, item("new"), item("new", body={"model": "second"}), item("new-2")]
    body = (await api.client.post(BULK, json=items)).json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["rejected", "rejected", "pending", "rejected", "pending"]
    errors = [r.get("errors", [{}])[0] for r in body["results"]]
    assert [(e.get("code"), e.get("source", {}).get("pointer")) for e in errors] == [
        ("duplicate_custom_id", "/0/custom_id"),
        ("duplicate_custom_id", "/1/custom_id"),
        (None, None),
        ("duplicate_custom_id", "/3/custom_id"),
        (None, None),
    ]
    assert errors[0]["detail"].endswith("was already accepted.")  # a resend
    assert "with a different request" in errors[1]["detail"]
    assert "item 2 of this body" in errors[3]["detail"]
    # Nothing lost, nothing overwritten: the stored ones and the first "new" are kept.
    assert await stored(api) == {
        "same": "stand-in",
        "other": "stand-in",
        "new": "stand-in",
        "new-2": "stand-in",
    }
    # The whole body again: every item is a duplicate now, and answers so (200).
    again = (await api.client.post(BULK, json=items)).json()
    assert (again["accepted"], again["rejected"]) == (0, 5)


@pytest.mark.parametrize("form", ["json", "jsonl"])
async def test_more_items_than_allowed_is_a_413_storing_nothing(
    database_url: str, start_app: StartApp, form: str
) -> None:
    settings = fast_settings(database_url, scheduler_enabled=False, api_bulk_max_items=3)
    async with start_app(settings) as app:
        items = [item(f"n-{i}") for i in range(4)]
        if form == "json":
            answer = await app.client.post(BULK, json=items)
        else:
            answer = await app.client.post(
                BULK, content=jsonl(items), headers={"content-type": "application/jsonl"}
            )
        assert answer.status_code == 413, answer.text
        error = answer.json()["errors"][0]
        assert error["code"] == "too_many_items" and "API_BULK_MAX_ITEMS" in error["detail"]
        assert await stored(app) == {}
        assert (await app.client.post(BULK, json=items[:3])).json()["accepted"] == 3


async def test_a_malformed_line_is_a_400_naming_it_and_stores_nothing(api: RunningApp) -> None:
    lines = jsonl([item("l-1"), item("l-2")]) + b"\n" + b'{"custom_id": "l-4", nope\n' + jsonl([item("l-5")])
    answer = await api.client.post(BULK, content=lines, headers={"content-type": "application/x-ndjson"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["errors"][0]
    assert error["code"] == "invalid_json" and error["detail"].startswith("Line 4 ")
    array = b'[\n{"custom_id": "a"},\n{"custom_id": }\n]'
    answer = await api.client.post(BULK, content=array, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["detail"].startswith("Line 3 ")
    assert await stored(api) == {}


async def test_refusals_of_the_whole_body(api: RunningApp) -> None:
    answer = await api.client.post(BULK, content=b"[]", headers={"content-type": "text/plain"})
    assert answer.status_code == 415
    assert answer.json()["errors"][0]["code"] == "unsupported_media_type"
    answer = await api.client.post(BULK, json=item("not-a-list"))
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["code"] == "not_an_array"
    answer = await api.client.post(BULK, json=[])
    assert answer.json() == {"accepted": 0, "rejected": 0, "results": []}
    assert await stored(api) == {}


async def test_body_over_its_own_limit_is_a_413(sqlite_url: str, start_app: StartApp) -> None:
    settings = fast_settings(
        sqlite_url, scheduler_enabled=False, api_bulk_max_body_bytes=4096, api_max_body_bytes=1024
    )
    async with start_app(settings) as app:
        # Larger than API_MAX_BODY_BYTES is fine here; larger than its own limit is not.
        assert (await app.client.post(BULK, json=[item(f"s-{i}") for i in range(8)])).status_code == 200
        answer = await app.client.post(BULK, json=[item(f"t-{i}") for i in range(40)])
        assert answer.status_code == 413
        assert "API_BULK_MAX_BODY_BYTES" in answer.json()["errors"][0]["detail"]


async def test_an_api_key_is_required_when_keys_are_set(sqlite_url: str, start_app: StartApp) -> None:
    settings = fast_settings(sqlite_url, scheduler_enabled=False, api_keys="bulk-key-1")
    async with start_app(settings) as app:
        answer = await app.client.post(BULK, json=[item("k-1")])
        assert answer.status_code == 401
        answer = await app.client.post(BULK, json=[item("k-1")], headers={"x-api-key": "bulk-key-1"})
        assert answer.status_code == 200 and answer.json()["accepted"] == 1


async def test_a_custom_id_named_bulk_is_still_read_back(api: RunningApp) -> None:
    assert (await api.client.post("/api/requests", json=item("bulk"))).status_code == 202
    assert (await api.client.get("/api/requests/bulk")).json()["custom_id"] == "bulk"
    assert (await api.client.post("/api/requests", json=item("bulk/x"))).status_code == 202
    assert (await api.client.get("/api/requests/bulk/x")).json()["custom_id"] == "bulk/x"
    assert (await api.client.post("/api/requests/bulk/cancel")).json()["status"] == "cancelled"


async def test_accepted_rows_are_counted_in_the_metric(api: RunningApp) -> None:
    before = metrics.ACCEPTED.labels("api")._value.get()
    await api.client.post(BULK, json=[item("m-1"), item("m-2"), item("m-1")])
    assert metrics.ACCEPTED.labels("api")._value.get() - before == 2


async def test_a_failure_after_a_stored_chunk_keeps_what_was_stored(
    api: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "CHUNK", 2)
    calls = 0
    real_insert = bulk_store.insert

    async def failing_second(*args: Any) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("database went away")
        return await real_insert(*args)

    monkeypatch.setattr(bulk_store, "insert", failing_second)
    items = [item(f"c-{i}") for i in range(5)]
    body = (await api.client.post(BULK, json=items)).json()
    assert [r["status"] for r in body["results"]] == ["pending", "pending", *["rejected"] * 3]
    assert {r["errors"][0]["code"] for r in body["results"][2:]} == {"not_stored"}
    assert sorted(await stored(api)) == ["c-0", "c-1"]
    monkeypatch.setattr(bulk_store, "insert", real_insert)
    again = (await api.client.post(BULK, json=items)).json()
    assert [r["status"] for r in again["results"]] == ["rejected", "rejected", *["pending"] * 3]


# -- the pipeline: chunk N stored while chunk N+1 is checked ------------------------------------


def body_of(items: list[Any]) -> bytes:
    return msgspec.json.encode(items)


async def test_many_chunks_answer_every_item_in_order_with_ids_in_input_order(
    api: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "CHUNK", 3)
    monkeypatch.setattr(bulk, "_YIELD_EVERY", 1)
    items = [item(f"o-{i}") for i in range(40)]
    items[5] = item("o-1")  # a repeat of item 1: rejected, the first kept
    items[37] = item("o-37", body={"messages": []})  # a bad item late in the body: only it rejected
    outcome = await bulk.accept_body(api.db, api.settings, body_of(items), False, 100)
    assert [r.index for r in outcome.results] == list(range(40))
    rejected = {r.index: r.problems[0].code for r in outcome.results if r.id is None}
    assert rejected == {5: "duplicate_custom_id", 37: "missing_model"}
    ids = [r.id for r in outcome.results if r.id is not None]
    assert ids == sorted(ids) and len(set(ids)) == 38  # the batcher takes the oldest id first
    assert sorted(await stored(api)) == sorted(r.custom_id for r in outcome.results if r.id is not None)
    assert gc.isenabled()


async def test_a_chunk_is_stored_before_the_last_items_are_checked(
    api: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "CHUNK", 4)
    monkeypatch.setattr(bulk, "_YIELD_EVERY", 1)
    events: list[str] = []
    real_insert, real_check = bulk_store.insert, bulk._Checker.check

    async def insert(*args: Any) -> dict[str, int]:
        events.append("stored")
        return await real_insert(*args)

    def check(self: Any, index: int, one: Any) -> Any:
        events.append(f"checked {index}")
        return real_check(self, index, one)

    monkeypatch.setattr(bulk_store, "insert", insert)
    monkeypatch.setattr(bulk._Checker, "check", check)
    outcome = await bulk.accept_body(
        api.db, api.settings, body_of([item(f"p-{i}") for i in range(12)]), False, 100
    )
    assert outcome.accepted == 12 and events.count("stored") == 3
    assert events.index("stored") < events.index("checked 11")


async def test_a_chunk_holding_a_taken_custom_id_stores_the_rest_in_order(
    api: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL COPYs a chunk straight into requests; a COPY cannot skip a taken custom_id, so
    # the chunk holding one is stored again the way that skips it, the chunks after it by COPY.
    monkeypatch.setattr(bulk, "CHUNK", 4)
    assert (await api.client.post("/api/requests", json=item("k-6"))).status_code == 202
    ways: list[str] = []

    def spied(way: str) -> Any:
        real = getattr(bulk_store, way)

        async def spy(*args: Any) -> Any:
            ways.append(way)
            return await real(*args)

        return spy

    if api.db.is_postgres:
        for way in ("_copy_postgres", "_stage_postgres"):
            monkeypatch.setattr(bulk_store, way, spied(way))
    items = [item(f"k-{i}") for i in range(10)]
    outcome = await bulk.accept_body(api.db, api.settings, body_of(items), False, 100)
    rejected = {r.index: r.problems[0].code for r in outcome.results if r.id is None}
    assert rejected == {6: "duplicate_custom_id"}
    assert outcome.results[6].problems[0].detail.endswith("was already accepted.")
    ids = [r.id for r in outcome.results if r.id is not None]
    assert ids == sorted(ids) and len(set(ids)) == 9
    assert sorted(await stored(api)) == sorted(f"k-{i}" for i in range(10))
    if api.db.is_postgres:  # chunks 0-3, 4-7 (k-6 taken: its COPY fails whole), 8-9
        assert ways == ["_copy_postgres", "_copy_postgres", "_stage_postgres", "_copy_postgres"]


async def test_a_copied_chunk_stores_what_a_chunk_skipping_taken_ids_stores(api: RunningApp) -> None:
    # On PostgreSQL the "a" body is COPYed, the "b" body (b-0 taken) stored the staged way.
    assert (await api.client.post("/api/requests", json=item("b-0"))).status_code == 202
    due = (utcnow() + timedelta(days=3)).replace(microsecond=123456)

    said = {"model": "stand-in", "messages": [{"role": "user", "content": "hé"}], "max_tokens": 5}

    def body_for(prefix: str) -> list[dict[str, Any]]:
        return [
            item(f"{prefix}-0"),
            item(f"{prefix}-1", body=said, complete_by=due.isoformat()),
            item(f"{prefix}-2", body=said),
            item(f"{prefix}-3", body=said, delivery_config=NO_DELIVERY),
        ]

    for prefix in ("a", "b"):
        outcome = await bulk.accept_body(api.db, api.settings, body_of(body_for(prefix)), False, 100)
        assert outcome.accepted == (4 if prefix == "a" else 3)
    c = Request.__table__.c
    kept = [c.scope, c.owner, c.origin, c.backend, c.endpoint, c.model, c.body, c.body_bytes]
    kept += [c.delivery, c.complete_by, c.status, c.inference_attempts, c.resubmits, c.batch_id]
    async with api.db.transaction() as session:
        rows = {r[0]: r[1:] for r in await session.execute(select(c.custom_id, *kept))}
        created = set((await session.execute(select(c.created_at).where(c.custom_id != "b-0"))).scalars())
    for i in range(1, 4):
        assert rows[f"a-{i}"] == rows[f"b-{i}"]
    assert rows["a-1"][9] == due and rows["a-0"][10] == "pending" and rows["a-0"][11:14] == (0, 0, None)
    assert len(created) == 2  # one created_at per body


async def test_a_team_with_limits_has_its_body_refused_whole_before_anything_is_stored(
    api: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "CHUNK", 2)
    items = [item(f"t-{i}") for i in range(6)]
    one = owner_limits.tokens_of(len(input_line("t-0", items[0]["url"], items[0]["body"])))
    await owner_limits.set_limits(api.db, "red", max_enqueued_tokens=one * 5, budget_usd=None)
    with pytest.raises(TooMany):
        await bulk.accept_body(api.db, api.settings, body_of(items), False, 100, Caller("red"))
    assert await stored(api) == {}
    outcome = await bulk.accept_body(api.db, api.settings, body_of(items[:4]), False, 100, Caller("red"))
    assert outcome.accepted == 4


async def test_a_cancelled_body_stops_its_store_and_collection_resumes(
    api: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "CHUNK", 2)
    started, stopped = asyncio.Event(), asyncio.Event()

    async def hanging(*args: Any) -> dict[str, int]:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()
        return {}

    monkeypatch.setattr(bulk_store, "insert", hanging)
    body = body_of([item(f"h-{i}") for i in range(6)])
    task = asyncio.create_task(bulk.accept_body(api.db, api.settings, body, False, 100))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped.is_set() and gc.isenabled()
    assert await stored(api) == {}


async def test_bulk_accepted_requests_are_batched_and_delivered(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        items = [request_payload(f"flow-{i}", webhook(receiver.url + "/hook")) for i in range(3)]
        items.append(request_payload("flow-pull", NO_DELIVERY))
        answer = await app.client.post(BULK, json=items)
        assert answer.json()["accepted"] == 4
        await receiver.wait_for(lambda r: len(r.successes()) == 3, timeout=20)
        assert sorted(r.json["custom_id"] for r in receiver.successes()) == ["flow-0", "flow-1", "flow-2"]
        lines = {r.json["custom_id"]: r.json for r in receiver.successes()}
        assert lines["flow-1"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: flow-1"
        async with app.db.transaction() as session:
            sizes = await session.scalar(select(func.sum(Request.body_bytes)))
        assert sizes == sum(len(input_line(i["custom_id"], i["url"], i["body"])) for i in items)


# -- the fast path agrees with single intake ------------------------------------------------------

TRICKY_BODIES: list[dict[str, Any]] = [
    {"model": "m"},
    {"messages": [{"role": "user", "content": 'hé ☃ 😀 \x7f \x01 \n " \\ /'}], "model": "m"},
    {"model": "m", "t": 1e16, "u": 1e-05, "v": 0.0001, "w": 123.456, "x": -0.0, "y": 10**30},
    {"model": "m", "nested": {"a": [1, 2.5, None, True, {"b": "e5"}]}, "s": "3e4 0.00001"},
    {"model": "ü" * 255},
]


@pytest.mark.parametrize("body", TRICKY_BODIES)
def test_line_bytes_is_the_batch_line_length(body: dict[str, Any]) -> None:
    for custom_id in ("plain", "ünï/cödé", 'quote"back\\slash', "del\x7f"):
        expected = len(input_line(custom_id, "/v1/embeddings", body).encode())
        assert bulk._line_bytes(custom_id, "/v1/embeddings", msgspec.json.encode(body)) == expected


QUICK_CASES: list[Any] = [
    item("a"),
    item("a/b/c", backend="local"),
    item("x", backend="openai"),  # no OPENAI_API_KEY: refused
    item("x", backend=None),
    item("x", method="GET"),
    item("x", method=None),
    item("x", url="/v1/nope"),
    item("a//b"),
    item("./a"),
    item("a\tb"),
    item("x" * 513),
    item(7),
    item("x", body={"model": ""}),
    item("x", body={"model": "m" * 256}),
    item("x", body={"model": 5}),
    item("x", body=[]),
    item("x", delivery_config={"type": "webhook", "webhook_url": "http://169.254.169.254/x"}),
    item("x", delivery_config={"type": "rabbitmq", "rabbitmq_queue": "q"}),  # no RABBITMQ_URL
    item("x", delivery_config={"type": "none", "extra": 1}),
    item("x", delivery_config=NO_DELIVERY),
    item("x", delivery_config=None),
    item("x", body={"model": "m", "messages": [{"content": "x" * 5000}]}),
    {**item("x"), "more": 1},
    {k: v for k, v in item("x").items() if k != "url"},
]


@pytest.mark.parametrize("case", QUICK_CASES)
def test_the_fast_path_accepts_only_what_single_intake_accepts(case: Any) -> None:
    settings = fast_settings("sqlite+aiosqlite:///unused.db", batch_max_bytes=4096)
    checker = bulk._Checker(settings, suspect=False)
    quick = checker._quick(case)
    try:
        request = validate(case, settings)
    except InvalidInput:
        assert quick is None
        return
    if quick is not None:  # when it answers, it stores what single intake would
        full = checker._full(case, "")
        assert quick.body == full.body and quick.body_bytes == request.line_bytes
        assert (quick.custom_id, quick.backend, quick.endpoint, quick.model) == (
            full.custom_id,
            full.backend,
            full.endpoint,
            full.model,
        )
        assert json.loads(quick.delivery) == json.loads(full.delivery)
