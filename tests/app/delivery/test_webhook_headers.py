"""Extra headers on a webhook delivery config: validated at intake, sent on every attempt, never
shown (API, UI, audit trail, logs), kept across an operator's edit only for the same origin."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from app.channels.base import Message
from app.channels.webhook import WebhookChannel
from app.db.models import Batch, Delivery, Request
from app.ground import logs, webhook_headers
from testkit import RunningApp, StartApp, fast_settings, request_payload, wait_until
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "Bearer receiver-token-7f3a9c"  # the value that must never be shown
HX = {"HX-Request": "true"}


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """Everything logged, as the app logs it with LOG_LEVEL=debug."""
    root, quiet = logging.getLogger(), logging.getLogger("aiosqlite")
    levels = (root.level, quiet.level)
    stream = io.StringIO()
    handler = logs.configure("debug", "plain", stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        quiet.setLevel(levels[1])


def hooked(url: str, headers: Any) -> dict[str, Any]:
    return {"type": "webhook", "webhook_url": url, "headers": headers}


async def stored_delivery(app: RunningApp, custom_id: str) -> dict[str, Any]:
    async with app.db.transaction() as session:
        return dict(await session.scalar(select(Request.delivery).where(Request.custom_id == custom_id)))


async def request_row_id(app: RunningApp, custom_id: str) -> int:
    async with app.db.transaction() as session:
        return int(await session.scalar(select(Request.id).where(Request.custom_id == custom_id)))


async def test_headers_go_with_every_attempt_signed_and_are_never_shown(
    database_url: str,
    inference: InferenceStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    debug_log: io.StringIO,
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", webhook_secret=SECRET)
    receiver.fail_first["hdr/1"] = 1  # the first attempt gets a 500: the retry must carry them too
    async with start_app(settings) as app:
        config = hooked(receiver.url + "/hook", {"Authorization": TOKEN, "X-Tenant": "a"})
        answer = await app.client.post("/api/requests", json=request_payload("hdr/1", config))
        assert answer.status_code == 202, answer.text
        await receiver.wait_for(lambda r: len(r.successes("hdr/1")) == 1, timeout=20)

        attempts = receiver.by_custom_id()["hdr/1"]
        assert [a.status for a in attempts] == [500, 200]
        for attempt in attempts:
            assert attempt.headers["authorization"] == TOKEN
            assert attempt.headers["x-tenant"] == "a"
        assert [a.headers["x-batchgate-attempt"] for a in attempts] == ["1", "2"]
        # The signature covers the body, as before: extra headers change nothing in it.
        verified = Webhook(SECRET).verify(attempts[1].body, attempts[1].headers)
        assert verified["custom_id"] == "hdr/1"

        async def delivered() -> bool:
            detail = (await app.client.get("/api/requests/hdr/1")).json()
            return (detail["delivery"] or {}).get("status") == "delivered"

        await wait_until(delivered, timeout=10, what="the delivery recorded")
        read = await app.client.get("/api/requests/hdr/1")
        assert TOKEN not in read.text and "receiver-token" not in read.text
        shown = {"Authorization": "••••", "X-Tenant": "••••"}
        assert read.json()["delivery_config"]["headers"] == shown
        assert read.json()["delivery"]["target"]["headers"] == shown

        # A redelivery (API) sends them again, and its answer shows them redacted too.
        again = await app.client.post("/api/requests/hdr/1/redeliver")
        assert again.status_code == 202 and TOKEN not in again.text, again.text
        assert again.json()["target"]["headers"] == shown
        await receiver.wait_for(lambda r: len(r.successes("hdr/1")) == 2, timeout=20)
        assert receiver.successes("hdr/1")[-1].headers["authorization"] == TOKEN

        rid = await request_row_id(app, "hdr/1")
        page = await app.client.get(f"/requests/{rid}")
        assert page.status_code == 200
        assert TOKEN not in page.text and "receiver-token" not in page.text
        assert "Authorization: ••••" in page.text  # the names are shown, with the values hidden
        for listing in ("/requests", "/requests?search=hdr", f"/batches/{read.json()['batch_id']}"):
            assert TOKEN not in (await app.client.get(listing)).text
    assert "hdr/1" in debug_log.getvalue()  # the log did see the request go by
    assert "receiver-token" not in debug_log.getvalue()


@pytest.mark.parametrize(
    ("headers", "code", "pointer"),
    [
        ({"Bad Name": "x"}, "invalid_header", "/delivery_config/headers/Bad Name"),
        ({"X-Tab\t": "x"}, "invalid_header", "/delivery_config/headers/X-Tab\t"),
        ({"": "x"}, "invalid_header", "/delivery_config/headers/"),
        ({"X-Split": "a\r\nX-Injected: " + TOKEN}, "invalid_header", "/delivery_config/headers/X-Split"),
        ({"X-Lf": TOKEN + "\n"}, "invalid_header", "/delivery_config/headers/X-Lf"),
        ({"X-Ctl": TOKEN + "\x07"}, "invalid_header", "/delivery_config/headers/X-Ctl"),
        ({"X-Uni": TOKEN + "é"}, "invalid_header", "/delivery_config/headers/X-Uni"),
        ({"X-Edge": " " + TOKEN}, "invalid_header", "/delivery_config/headers/X-Edge"),
        ({"X-Num": 5}, "invalid_header", "/delivery_config/headers/X-Num"),
        ("Authorization: " + TOKEN, "invalid_header", "/delivery_config/headers"),
        ({f"X-{i}": "v" for i in range(21)}, "invalid_header", "/delivery_config/headers"),
        ({"X-Big": TOKEN + "x" * 8192}, "invalid_header", "/delivery_config/headers"),
        ({"X-Twice": TOKEN, "x-twice": "b"}, "invalid_header", "/delivery_config/headers"),
        ({"webhook-signature": "v1,forged"}, "reserved_header", "/delivery_config/headers/webhook-signature"),
        ({"Webhook-Id": "msg_1"}, "reserved_header", "/delivery_config/headers/Webhook-Id"),
        ({"webhook-timestamp": "1"}, "reserved_header", "/delivery_config/headers/webhook-timestamp"),
        ({"Content-Type": "text/plain"}, "reserved_header", "/delivery_config/headers/Content-Type"),
        ({"content-length": "0"}, "reserved_header", "/delivery_config/headers/content-length"),
        ({"Host": "evil.example"}, "reserved_header", "/delivery_config/headers/Host"),
        ({"Transfer-Encoding": "chunked"}, "reserved_header", "/delivery_config/headers/Transfer-Encoding"),
        ({"X-Batchgate-Attempt": "9"}, "reserved_header", "/delivery_config/headers/X-Batchgate-Attempt"),
        ({"webhook-anything": "x"}, "reserved_header", "/delivery_config/headers/webhook-anything"),
    ],
)
async def test_bad_headers_are_422_with_a_pointer_and_nothing_is_stored(
    sqlite_url: str, start_app: StartApp, headers: Any, code: str, pointer: str
) -> None:
    async with start_app(fast_settings(sqlite_url, scheduler_enabled=False)) as app:
        config = hooked("https://example.com/hook", headers)
        answer = await app.client.post("/api/requests", json=request_payload("bad", config))
        assert answer.status_code == 422, answer.text
        errors = answer.json()["errors"]
        assert [(e["code"], e["source"]["pointer"]) for e in errors] == [(code, pointer)]
        assert errors[0]["detail"].startswith("delivery_config.headers")
        assert "receiver-token" not in answer.text  # a refused value is never echoed
        assert (await app.client.get("/api/requests/bad")).status_code == 404


async def test_every_header_the_channel_sets_is_reserved() -> None:
    channel = WebhookChannel(fast_settings("sqlite+aiosqlite:///:memory:", webhook_secret=SECRET))
    try:
        message = Message("dlv_1", "c/1", 1, b"{}", {"type": "webhook", "webhook_url": "http://x/"})
        own = set(channel.headers(message, datetime.now(UTC))) | {"host", "user-agent"}
        assert {"webhook-signature", "webhook-id", "webhook-timestamp", "content-type"} <= own
        assert all(webhook_headers.reserved(name) for name in own), own
        # A stored header that breaks a rule (written before the rule existed) is refused at send
        # time without being sent, and the error names no value.
        target = {**message.target, "headers": {"webhook-signature": "v1,forged", "X-A": TOKEN + "\n"}}
        result = await channel.send(Message("dlv_1", "c/1", 1, b"{}", target))
        assert result.outcome == "permanent_failure" and result.error is not None
        assert "webhook-signature" in result.error and "receiver-token" not in result.error
    finally:
        await channel.close()


def form_config(page: str) -> dict[str, Any]:
    """The delivery config as the edit form pre-fills it."""
    found = re.search(r'<textarea name="delivery_config"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, "no delivery config form"
    return json.loads(found.group(1).replace("&#34;", '"').replace("&quot;", '"'))


async def test_an_edit_keeps_hidden_values_only_for_the_same_origin(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> None:
    # The batch stays open until closed here, so every edit happens before the delivery.
    settings = fast_settings(database_url, inference.url + "/v1", local_batch_max_age_seconds=3600)
    async with start_app(settings) as app:
        config = hooked(receiver.url + "/hook", {"Authorization": TOKEN, "X-Tenant": "a"})
        answer = await app.client.post("/api/requests", json=request_payload("edit/1", config))
        assert answer.status_code == 202, answer.text
        rid = await request_row_id(app, "edit/1")

        async def edit(new: Any) -> Any:
            data = {"delivery_config": json.dumps(new)}
            answer = await app.client.post(f"/requests/{rid}/delivery", data=data, headers=HX)
            assert "receiver-token" not in answer.text
            return answer

        page = (await app.client.get(f"/requests/{rid}")).text
        assert "receiver-token" not in page
        shown = form_config(page)
        assert shown["headers"] == {"Authorization": "••••", "X-Tenant": "••••"}

        # The form sent back as shown, re-pointed on the same origin: the values stay.
        answer = await edit({**shown, "webhook_url": receiver.url + "/second"})
        assert answer.status_code == 200, answer.text
        kept = await stored_delivery(app, "edit/1")
        assert kept["headers"] == {"Authorization": TOKEN, "X-Tenant": "a"}
        # Left out entirely: kept too.
        answer = await edit({"type": "webhook", "webhook_url": receiver.url + "/third"})
        assert answer.status_code == 200, answer.text
        assert (await stored_delivery(app, "edit/1"))["headers"]["Authorization"] == TOKEN

        # Another origin (localhost is not 127.0.0.1): hidden values are not carried there.
        await refused_edits(edit, shown, receiver.url.replace("127.0.0.1", "localhost") + "/hook")
        assert (await stored_delivery(app, "edit/1"))["webhook_url"].endswith("/third")

        # One value changed, one kept, one added; then delivered with exactly those.
        changed = {"Authorization": "••••", "X-Tenant": "b", "X-New": "c"}
        answer = await edit({**shown, "webhook_url": receiver.url + "/third", "headers": changed})
        assert answer.status_code == 200, answer.text
        page = (await app.client.get(f"/requests/{rid}")).text
        assert "receiver-token" not in page and "delivery_changed" in page  # audit trail redacted
        await close_and_deliver(app, receiver, "edit/1")
        [got] = receiver.successes("edit/1")
        assert got.path == "/third"
        sent = (got.headers["authorization"], got.headers["x-tenant"], got.headers["x-new"])
        assert sent == (TOKEN, "b", "c")

        # "headers": {} removes them; the next redelivery carries none.
        none = {"type": "webhook", "webhook_url": receiver.url + "/third", "headers": {}}
        assert (await edit(none)).status_code == 200
        assert (await app.client.post("/api/requests/edit/1/redeliver")).status_code == 202
        await receiver.wait_for(lambda r: len(r.successes("edit/1")) == 2, timeout=20)
        assert "authorization" not in receiver.successes("edit/1")[-1].headers


async def refused_edits(edit: Callable[[Any], Awaitable[Any]], shown: Any, elsewhere: str) -> None:
    """Edits that must change nothing: stored values to another origin, a hidden value for a
    header never stored, a reserved header."""
    for attempt in ({"type": "webhook", "webhook_url": elsewhere}, {**shown, "webhook_url": elsewhere}):
        answer = await edit(attempt)
        assert answer.status_code == 422 and "another origin" in answer.text, answer.text
    answer = await edit({**shown, "headers": {"X-New": "••••"}})
    assert answer.status_code == 422 and "no stored header" in answer.text, answer.text
    answer = await edit({**shown, "headers": {"Webhook-Signature": "v1,x"}})
    assert answer.status_code == 422 and "set by Batchgate" in answer.text, answer.text


async def close_and_deliver(app: RunningApp, receiver: WebhookReceiver, custom_id: str) -> None:
    """Close the request's building batch and wait for its delivery."""

    async def batched() -> int | None:
        async with app.db.transaction() as session:
            return await session.scalar(select(Batch.id).where(Batch.status == "building"))

    await wait_until(batched, timeout=10, what="a building batch")
    batch_id = await batched()
    assert (await app.client.post(f"/api/batches/{batch_id}/close")).status_code in (200, 202)
    await receiver.wait_for(lambda r: len(r.successes(custom_id)) == 1, timeout=20)

    async def recorded() -> bool:
        async with app.db.transaction() as session:
            return await session.scalar(select(Delivery.status)) == "delivered"

    await wait_until(recorded, timeout=10, what="the delivery recorded")
