"""The operator UI's pages and fragments, over HTTP against the real app, on both databases: a
finished batch and its files, 404s, the request and batch lists searched, filtered, sorted and
paged, and a badge colour for every batch status."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from app.core.rules import states
from app.db.models import Batch
from app.ground.clock import utcnow
from testkit import RunningApp
from testkit.operator_ui import (
    HX,
    assert_toast,
    building_batch,
    ids,
    request_id,
    submit,
    wait_batch,
    wait_delivered,
)
from testkit.standins.receiver import WebhookReceiver


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


def test_every_batch_status_has_a_badge_colour() -> None:
    from app.ui.render import BADGE

    for table in (states.BATCH_TRANSITIONS, states.REQUEST_TRANSITIONS, states.DELIVERY_TRANSITIONS):
        assert set(table) <= set(BADGE)
