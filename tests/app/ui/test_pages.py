"""The operator UI's pages, fragments and actions, over HTTP against the real app, on both databases."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.rules import states
from app.db.models import Batch, Delivery, Request, RequestEvent, Setting
from app.ground.clock import utcnow
from testkit import RunningApp, StartApp, fast_settings, new_batch, request_payload, wait_until
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

HX = {"HX-Request": "true"}


@pytest.fixture
async def ui(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> AsyncIterator[RunningApp]:
    # Batches stay `building` until closed by the operator (or 50 requests), so tests control timing.
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        local_batch_max_age_seconds=3600,
        batch_max_requests=50,
        delivery_max_attempts=2,
    )
    async with start_app(settings) as app:
        yield app


async def submit(
    app: RunningApp, receiver: WebhookReceiver, *custom_ids: str, model: str = "stand-in"
) -> None:
    for custom_id in custom_ids:
        payload = request_payload(custom_id, {"type": "webhook", "webhook_url": receiver.url + "/hook"})
        payload["body"]["model"] = model
        answer = await app.client.post("/api/requests", json=payload)
        assert answer.status_code == 202, answer.text


async def building_batch(app: RunningApp, model: str = "stand-in") -> int:
    async def opened() -> bool:
        async with app.db.transaction() as session:
            return bool(
                await session.scalar(
                    select(Batch.id).where(
                        Batch.status == "building", Batch.model == model, Batch.request_count > 0
                    )
                )
            )

    await wait_until(opened, timeout=10, what="a building batch")
    async with app.db.transaction() as session:
        return int(
            await session.scalar(select(Batch.id).where(Batch.status == "building", Batch.model == model))
        )


async def batch_status(app: RunningApp, batch_id: int) -> str | None:
    async with app.db.transaction() as session:
        return await session.scalar(select(Batch.status).where(Batch.id == batch_id))


async def wait_batch(app: RunningApp, batch_id: int, status: str) -> None:
    async def there() -> bool:
        return await batch_status(app, batch_id) == status

    await wait_until(there, timeout=20, what=f"batch {batch_id} {status}")


async def delivery_statuses(app: RunningApp) -> dict[str, str]:
    async with app.db.transaction() as session:
        rows = await session.execute(
            select(Request.custom_id, Delivery.status).join(Delivery).order_by(Delivery.id)
        )
        return {custom_id: status for custom_id, status in rows}


async def wait_delivered(app: RunningApp, expected: dict[str, str]) -> None:
    async def settled() -> bool:
        current = await delivery_statuses(app)
        return all(current.get(k) == v for k, v in expected.items())

    await wait_until(settled, timeout=20, what=f"deliveries {expected}")


async def request_id(app: RunningApp, custom_id: str) -> int:
    async with app.db.transaction() as session:
        return int(await session.scalar(select(Request.id).where(Request.custom_id == custom_id)))


def assert_toast(answer: httpx.Response, status: int, kind: str, text: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["HX-Retarget"] == "#toast"
    assert answer.headers["HX-Reswap"] == "innerHTML"
    assert answer.headers["content-type"].startswith("text/html")
    assert f'class="toast {kind}"' in answer.text
    assert text in answer.text, answer.text
    if kind == "ok":
        assert answer.headers["HX-Trigger"] == "refresh"


def ids(html: str, kind: str) -> list[int]:
    return [int(n) for n in re.findall(rf'<tr id="{kind}-(\d+)"', html)]


async def test_pages_show_a_finished_batch_and_its_files(ui: RunningApp, receiver: WebhookReceiver) -> None:
    await submit(ui, receiver, "page/1", "page/2", "page/3")
    batch_id = await building_batch(ui)
    assert_toast(await ui.client.post(f"/batches/{batch_id}/close", headers=HX), 200, "ok", "closes now")
    await wait_batch(ui, batch_id, "done")
    await wait_delivered(ui, {f"page/{i}": "delivered" for i in (1, 2, 3)})

    dashboard = await ui.client.get("/")
    assert dashboard.status_code == 200
    for path in ("/", "/batches", f"/batches/{batch_id}", "/requests", "/settings"):
        for headers in ({}, HX):
            assert (
                (await ui.client.get(path, headers=headers)).headers["content-type"].startswith("text/html")
            )
    assert "<html" in dashboard.text and 'href="/api/swaggerui"' in dashboard.text
    assert 'href="/api/openapi.json"' in dashboard.text
    live = (await ui.client.get("/", headers=HX)).text
    assert "<html" not in live and live.lstrip().startswith('<div id="live"')
    assert 'id="success-rate">100.0%' in live
    assert re.search(r"this minute (\d+)", live) and int(re.search(r"this minute (\d+)", live)[1]) >= 3

    listing = await ui.client.get("/batches")
    assert listing.status_code == 200 and "<html" in listing.text
    assert ids(listing.text, "batch") == [batch_id]
    fragment = (await ui.client.get("/batches", headers=HX)).text
    assert fragment.lstrip().startswith('<div id="results"') and "<html" not in fragment
    assert f'<tr id="batch-{batch_id}" data-status="done">' in fragment
    assert "3/3" in fragment

    detail = (await ui.client.get(f"/batches/{batch_id}")).text
    for status in ("building", "ready", "submitting", "processing", "collecting", "done"):
        assert f'badge ok">{status}' in detail or f">{status}</span>" in detail
    assert "delivered 3" in detail and "closed by operator" in detail
    assert "Redeliver all" in detail and "Delete" in detail and "Close now" not in detail
    assert (
        (await ui.client.get(f"/batches/{batch_id}", headers=HX)).text.lstrip().startswith('<div id="live"')
    )

    for kind, expected in (("input", 3), ("output", 3), ("error", 0)):
        answer = await ui.client.get(f"/batches/{batch_id}/{kind}.jsonl")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        assert f'filename="batch_{batch_id}_{kind}.jsonl"' in answer.headers["content-disposition"]
        lines = answer.text.splitlines()
        assert len(lines) == expected
        assert (
            sorted(line.split('"custom_id":"')[1].split('"')[0] for line in lines)
            == [f"page/{i}" for i in (1, 2, 3)][:expected]
        )
    assert (await ui.client.get(f"/batches/{batch_id}/secrets.txt")).status_code == 404

    rid = await request_id(ui, "page/2")
    page = (await ui.client.get(f"/requests/{rid}")).text
    assert "page/2" in page and "echo: page/2" in page and 'data-outcome="success"' in page
    assert 'id="delivery-status"><span class="badge ok">delivered' in page

    settings_page = await ui.client.get("/settings")
    assert settings_page.status_code == 200 and 'name="delivery_max_attempts" value="2"' in settings_page.text


async def test_missing_things_answer_404_as_a_page_or_a_toast(ui: RunningApp) -> None:
    page = await ui.client.get("/batches/999999")
    assert page.status_code == 404 and "<html" in page.text and "No batch with id 999999" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert (await ui.client.get("/requests/999999")).status_code == 404
    assert_toast(await ui.client.post("/batches/999999/cancel", headers=HX), 404, "bad", "No batch")
    assert_toast(await ui.client.post("/requests/999999/redeliver", headers=HX), 404, "bad", "No request")


async def test_request_list_searches_filters_sorts_and_pages(
    ui: RunningApp, receiver: WebhookReceiver
) -> None:
    names = [f"k/{n:02d}" for n in range(23)]
    await submit(ui, receiver, *names[:20])
    await submit(ui, receiver, *names[20:], model="other-model")
    await submit(ui, receiver, "x/k/1")

    async def page_ids(**params: Any) -> tuple[list[str], str]:
        html = (await ui.client.get("/requests", params=params, headers=HX)).text
        return re.findall(r'<td class="cid"><a href="/requests/\d+">([^<]+)</a>', html), html

    # custom_id order, 10 per page, walked forwards by cursor and back again.
    first, html = await page_ids(sort="custom_id", size=10)
    assert first == names[:10] and "24 in all" in html
    after = re.search(r'rel="next" hx-get="/requests\?[^"]*after=([\w-]+)', html)[1]
    second, html = await page_ids(sort="custom_id", size=10, after=after)
    assert second == names[10:20]
    after = re.search(r'rel="next" hx-get="/requests\?[^"]*after=([\w-]+)', html)[1]
    third, html = await page_ids(sort="custom_id", size=10, after=after)
    assert third == [*names[20:], "x/k/1"] and 'rel="next"' not in html
    before = re.search(r'rel="prev" hx-get="/requests\?[^"]*before=([\w-]+)', html)[1]
    back, _ = await page_ids(sort="custom_id", size=10, before=before)
    assert back == names[10:20]

    newest, _ = await page_ids(sort="newest", size=25)
    assert newest == ["x/k/1", *reversed(names)]
    oldest, _ = await page_ids(sort="oldest", size=25)
    assert oldest == [*names, "x/k/1"]

    prefix, html = await page_ids(search="k/1", match="prefix", size=50)
    assert sorted(prefix) == [f"k/1{n}" for n in range(10)] and "10 in all" in html
    contains, _ = await page_ids(search="k/1", match="contains", size=50)
    assert sorted(contains) == sorted([f"k/1{n}" for n in range(10)] + ["x/k/1"])
    by_model, _ = await page_ids(model="other-model")
    assert sorted(by_model) == names[20:]
    literal, _ = await page_ids(search="k/_", match="prefix")  # LIKE wildcards are taken literally
    assert literal == []

    # Cancel one, then filter by status and by delivery status.
    rid = await request_id(ui, "k/05")
    assert_toast(await ui.client.post(f"/requests/{rid}/cancel", headers=HX), 200, "ok", "cancelled")
    cancelled, _ = await page_ids(status="cancelled")
    assert cancelled == ["k/05"]
    await wait_delivered(ui, {"k/05": "delivered"})
    delivered, _ = await page_ids(delivery_status="delivered")
    assert delivered == ["k/05"]
    by_status, _ = await page_ids(sort="status", size=50)
    assert by_status[0] == "k/05"  # 'cancelled' sorts before 'pending'


async def test_batch_list_filters_sorts_and_pages(ui: RunningApp) -> None:
    now = utcnow()
    async with ui.db.transaction() as session:
        for n in range(12):
            session.add(
                Batch(
                    backend="local",
                    endpoint="/v1/embeddings" if n % 3 == 0 else "/v1/chat/completions",
                    model=f"model-{n % 4}",
                    status="done" if n % 2 else "failed",
                    request_count=0,
                    bytes=0,
                    completed_count=0,
                    failed_count=0,
                    created_at=now - timedelta(minutes=n),
                    status_changed_at=now,
                )
            )
    everything = ids((await ui.client.get("/batches", params={"size": 50}, headers=HX)).text, "batch")
    assert len(everything) == 12 and everything == sorted(everything, reverse=True)
    oldest = ids((await ui.client.get("/batches", params={"sort": "oldest"}, headers=HX)).text, "batch")
    assert oldest == sorted(everything)[:12]
    html = (await ui.client.get("/batches", params={"sort": "status", "size": 10}, headers=HX)).text
    statuses = re.findall(r'data-status="(\w+)"', html)
    assert statuses == ["done"] * 6 + ["failed"] * 4 and "12 in all" in html
    after = re.search(r'rel="next" hx-get="/batches\?[^"]*after=([\w-]+)', html)[1]
    rest = (
        await ui.client.get("/batches", params={"sort": "status", "size": 10, "after": after}, headers=HX)
    ).text
    assert re.findall(r'data-status="(\w+)"', rest) == ["failed"] * 2
    assert set(ids(html, "batch")) | set(ids(rest, "batch")) == set(everything)

    failed = (await ui.client.get("/batches", params={"status": "failed"}, headers=HX)).text
    assert len(ids(failed, "batch")) == 6 and "Retry" in failed
    embeddings = (await ui.client.get("/batches", params={"search": "embeddings"}, headers=HX)).text
    assert len(ids(embeddings, "batch")) == 4
    by_model = (await ui.client.get("/batches", params={"search": "model-1"}, headers=HX)).text
    assert len(ids(by_model, "batch")) == 3
    nothing = (await ui.client.get("/batches", params={"backend": "openai"}, headers=HX)).text
    assert ids(nothing, "batch") == [] and "match these filters" in nothing


async def test_cancel_a_building_batch_delivers_the_cancellations(
    ui: RunningApp, receiver: WebhookReceiver
) -> None:
    await submit(ui, receiver, "cancel/1", "cancel/2")
    batch_id = await building_batch(ui)
    answer = await ui.client.post(f"/batches/{batch_id}/cancel", headers=HX)
    assert_toast(answer, 200, "ok", f"Batch {batch_id} cancelled")
    assert await batch_status(ui, batch_id) == "cancelled"
    await receiver.wait_for(lambda r: len(r.successes()) == 2, timeout=15)
    assert {r.json["error"]["code"] for r in receiver.successes()} == {"cancelled"}
    listing = (await ui.client.get("/requests", params={"batch_id": batch_id}, headers=HX)).text
    assert listing.count('data-status="cancelled"') == 2
    assert_toast(await ui.client.post(f"/batches/{batch_id}/cancel", headers=HX), 409, "bad", "cannot")
    assert_toast(await ui.client.post(f"/batches/{batch_id}/close", headers=HX), 409, "bad", "is cancelled")


async def test_cancel_a_processing_batch_stops_it(
    ui: RunningApp, inference: InferenceStandin, receiver: WebhookReceiver
) -> None:
    inference.delay_seconds = 5  # long enough that the batch is still processing when cancelled
    await submit(ui, receiver, "slow/1", "slow/2")
    batch_id = await building_batch(ui)
    await ui.client.post(f"/batches/{batch_id}/close", headers=HX)
    await wait_batch(ui, batch_id, "processing")
    assert_toast(await ui.client.post(f"/batches/{batch_id}/cancel", headers=HX), 200, "ok", "cancelled")
    assert await batch_status(ui, batch_id) == "cancelled"
    await wait_delivered(ui, {"slow/1": "delivered", "slow/2": "delivered"})
    # The inference answers arriving later change nothing: the requests stay cancelled.
    await wait_until(lambda: _no_calls_in_flight(inference), timeout=15, what="inference calls to end")
    async with ui.db.transaction() as session:
        statuses = set(
            (await session.scalars(select(Request.status).where(Request.batch_id == batch_id))).all()
        )
    assert statuses == {"cancelled"}
    assert {r.json["error"]["code"] for r in receiver.successes()} == {"cancelled"}


async def _no_calls_in_flight(inference: InferenceStandin) -> bool:
    return inference.in_flight == 0


async def test_retry_a_failed_batch_runs_its_failed_requests_again(
    ui: RunningApp, receiver: WebhookReceiver
) -> None:
    # A batch whose run failed (the runner gives up after 3 crashes): made directly, as the
    # local backend only fails a whole batch on bugs or database faults.
    now = utcnow()
    async with ui.db.transaction() as session:
        batch = new_batch(
            status="failed",
            request_count=2,
            bytes=200,
            failed_count=2,
            run_failures=3,
            error={"code": "internal_error", "message": "the batch run failed 3 times"},
        )
        session.add(batch)
        await session.flush()
        for n in (1, 2):
            body = request_payload(f"retry/{n}", {})["body"]
            session.add(
                Request(
                    custom_id=f"retry/{n}",
                    origin="api",
                    backend="local",
                    endpoint="/v1/chat/completions",
                    model="stand-in",
                    body=body,
                    body_bytes=100,
                    delivery={"type": "webhook", "webhook_url": receiver.url + "/hook"},
                    status="failed",
                    batch_id=batch.id,
                    error={"code": "internal_error", "message": "the batch run failed 3 times"},
                    inference_attempts=1,
                    created_at=now,
                )
            )
        batch_id = batch.id
    page = (await ui.client.get(f"/batches/{batch_id}")).text
    assert 'id="batch-error"' in page and "the batch run failed 3 times" in page and "Retry" in page
    assert_toast(await ui.client.post(f"/batches/{batch_id}/retry", headers=HX), 200, "ok", "run again")
    await wait_batch(ui, batch_id, "done")
    await receiver.wait_for(lambda r: len(r.successes()) == 2, timeout=15)
    assert all(r.json["error"] is None for r in receiver.successes())
    async with ui.db.transaction() as session:
        batch = await session.get(Batch, batch_id)
        assert (batch.completed_count, batch.failed_count, batch.error) == (2, 0, None)
    assert_toast(await ui.client.post(f"/batches/{batch_id}/retry", headers=HX), 409, "bad", "is done")


async def test_redeliver_failed_and_all_then_delete(ui: RunningApp, receiver: WebhookReceiver) -> None:
    receiver.status_for["rd/2"] = 400  # a permanent failure
    await submit(ui, receiver, "rd/1", "rd/2")
    batch_id = await building_batch(ui)
    await ui.client.post(f"/batches/{batch_id}/close", headers=HX)
    await wait_delivered(ui, {"rd/1": "delivered", "rd/2": "delivery_failed"})

    receiver.status_for.pop("rd/2")
    answer = await ui.client.post(f"/batches/{batch_id}/redeliver?only=failed", headers=HX)
    assert_toast(answer, 200, "ok", "Redelivering 1 failed deliveries")
    await wait_delivered(ui, {"rd/2": "delivered"})
    assert len(receiver.successes("rd/1")) == 1 and len(receiver.successes("rd/2")) == 1
    assert_toast(
        await ui.client.post(f"/batches/{batch_id}/redeliver?only=failed", headers=HX),
        409,
        "bad",
        "no failed",
    )
    answer = await ui.client.post(f"/batches/{batch_id}/redeliver?only=all", headers=HX)
    assert_toast(answer, 200, "ok", "Redelivering 2 deliveries")
    await receiver.wait_for(lambda r: len(r.successes()) == 4, timeout=15)
    await wait_delivered(ui, {"rd/1": "delivered", "rd/2": "delivered"})
    timeline = (await ui.client.get(f"/batches/{batch_id}")).text
    assert (
        "operator redelivered 1 failed deliveries" in timeline
        and "operator redelivered 2 deliveries" in timeline
    )

    # Delete from the detail page: the browser is sent back to the list.
    answer = await ui.client.post(
        f"/batches/{batch_id}/delete", headers={**HX, "HX-Current-URL": f"{ui.url}/batches/{batch_id}"}
    )
    assert answer.status_code == 200 and answer.headers["HX-Redirect"] == "/batches"
    async with ui.db.transaction() as session:
        assert await session.get(Batch, batch_id) is None
        assert await session.scalar(select(func.count()).select_from(Request)) == 0
        assert await session.scalar(select(func.count()).select_from(Delivery)) == 0


async def test_delete_is_refused_while_not_finished_or_undelivered(
    ui: RunningApp, receiver: WebhookReceiver
) -> None:
    await submit(ui, receiver, "del/1")
    batch_id = await building_batch(ui)
    assert_toast(
        await ui.client.post(f"/batches/{batch_id}/delete", headers=HX), 409, "bad", "cancel it first"
    )
    receiver.delay_for["del/1"] = 3  # the delivery is still in flight when delete is pressed
    await ui.client.post(f"/batches/{batch_id}/close", headers=HX)
    await wait_batch(ui, batch_id, "done")
    answer = await ui.client.post(f"/batches/{batch_id}/delete", headers=HX)
    assert_toast(answer, 409, "bad", "still being delivered")
    await wait_delivered(ui, {"del/1": "delivered"})
    assert_toast(await ui.client.post(f"/batches/{batch_id}/delete", headers=HX), 200, "ok", "deleted with 1")


async def test_request_actions_edit_delivery_redeliver_cancel(
    ui: RunningApp, receiver: WebhookReceiver
) -> None:
    await submit(ui, receiver, "req/1", "req/2")
    rid = await request_id(ui, "req/1")
    # Not finished yet: redeliver is refused, the config can be re-pointed before the result exists.
    assert_toast(await ui.client.post(f"/requests/{rid}/redeliver", headers=HX), 409, "bad", "has a result")
    bad_json = await ui.client.post(
        f"/requests/{rid}/delivery", data={"delivery_config": "{nope"}, headers=HX
    )
    assert_toast(bad_json, 422, "bad", "not valid JSON")
    bad_url = await ui.client.post(
        f"/requests/{rid}/delivery",
        data={"delivery_config": '{"type": "webhook", "webhook_url": "ftp://x"}'},
        headers=HX,
    )
    assert_toast(bad_url, 422, "bad", "webhook_url must be an absolute http")
    new_target = receiver.url + "/elsewhere"
    answer = await ui.client.post(
        f"/requests/{rid}/delivery",
        data={"delivery_config": f'{{"type": "webhook", "webhook_url": "{new_target}"}}'},
        headers=HX,
    )
    assert_toast(answer, 200, "ok", "Delivery config saved: webhook")

    batch_id = await building_batch(ui)
    await ui.client.post(f"/batches/{batch_id}/close", headers=HX)
    await wait_delivered(ui, {"req/1": "delivered", "req/2": "delivered"})
    assert [r.path for r in receiver.successes("req/1")] == ["/elsewhere"]

    assert_toast(await ui.client.post(f"/requests/{rid}/redeliver", headers=HX), 200, "ok", "queued again")
    await receiver.wait_for(lambda r: len(r.successes("req/1")) == 2, timeout=15)
    page = (await ui.client.get(f"/requests/{rid}")).text
    assert "delivery_changed" in page and "redeliver" in page and "/elsewhere" in page
    async with ui.db.transaction() as session:
        actions = (
            await session.scalars(select(RequestEvent.action).where(RequestEvent.request_id == rid))
        ).all()
    assert list(actions) == ["delivery_changed", "redeliver"]
    assert_toast(
        await ui.client.post(f"/requests/{rid}/cancel", headers=HX), 409, "bad", "nothing left to cancel"
    )

    # Without htmx the same forms still work: a redirect back to where the button was.
    plain = await ui.client.post(
        f"/requests/{rid}/redeliver", headers={"referer": f"{ui.url}/requests/{rid}"}, follow_redirects=False
    )
    assert plain.status_code == 303 and plain.headers["location"] == f"/requests/{rid}"


async def test_settings_are_validated_applied_and_reset(ui: RunningApp) -> None:
    bad = await ui.client.post(
        "/settings", data={"delivery_max_attempts": "0", "batch_max_bytes": "lots"}, headers=HX
    )
    assert_toast(bad, 422, "bad", "delivery_max_attempts: Input should be greater than or equal to 1")
    assert "batch_max_bytes: Input should be a valid integer" in bad.text
    unknown = await ui.client.post("/settings", data={"webhook_secret": "x"}, headers=HX)
    assert_toast(unknown, 422, "bad", "is not editable")
    assert ui.worker.settings.delivery_max_attempts == 2

    good = await ui.client.post(
        "/settings", data={"delivery_max_attempts": "5", "batch_max_requests": "50"}, headers=HX
    )
    assert_toast(good, 200, "ok", "Settings saved")
    assert ui.worker.settings.delivery_max_attempts == 5
    async with ui.db.transaction() as session:
        stored = {s.name: s.value for s in (await session.scalars(select(Setting))).all()}
    assert stored == {"delivery_max_attempts": 5}  # 50 is the default here: no override stored
    page = (await ui.client.get("/settings")).text
    assert 'name="delivery_max_attempts" value="5"' in page and "overridden" in page

    reset = await ui.client.post("/settings/reset", headers=HX)
    assert reset.status_code == 200 and reset.headers["HX-Redirect"] == "/settings"
    assert ui.worker.settings.delivery_max_attempts == 2
    assert "overridden" not in (await ui.client.get("/settings")).text


def test_every_batch_status_has_a_badge_colour() -> None:
    from app.ui.render import BADGE

    for table in (states.BATCH_TRANSITIONS, states.REQUEST_TRANSITIONS, states.DELIVERY_TRANSITIONS):
        assert set(table) <= set(BADGE)


async def test_the_api_offers_the_same_actions(ui: RunningApp, receiver: WebhookReceiver) -> None:
    await submit(ui, receiver, "api/1", "api/2")
    cancelled = await ui.client.post("/api/requests/api/1/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    again = await ui.client.post("/api/requests/api/1/cancel")
    assert again.status_code == 409 and again.json()["errors"][0]["code"] == "request_finished"
    batch_id = await building_batch(ui)
    answer = await ui.client.post(f"/api/batches/{batch_id}/cancel")
    assert answer.status_code == 202 and answer.json()["status"] == "cancelled"
    assert (await ui.client.post(f"/api/batches/{batch_id}/retry")).json()["errors"][0]["code"] == (
        "batch_not_failed"
    )
    await wait_delivered(ui, {"api/1": "delivered", "api/2": "delivered"})
    none_failed = await ui.client.post(f"/api/batches/{batch_id}/redeliver")
    assert (
        none_failed.status_code == 409 and none_failed.json()["errors"][0]["code"] == "nothing_to_redeliver"
    )
    assert (await ui.client.post(f"/api/batches/{batch_id}/redeliver?only=all")).json() == {
        "batch_id": batch_id,
        "redelivered": 1,  # api/2's cancellation; api/1 was cancelled before it had a batch
    }
    await wait_delivered(ui, {"api/2": "delivered"})
    deleted = await ui.client.delete(f"/api/batches/{batch_id}")
    assert deleted.status_code == 200 and deleted.json() == {"batch_id": batch_id, "deleted_requests": 1}
    assert (await ui.client.get(f"/api/batches/{batch_id}")).status_code == 404
