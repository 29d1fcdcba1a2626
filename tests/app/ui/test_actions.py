"""The operator UI's actions, over HTTP against the real app, on both databases: cancel, retry,
redeliver and delete a batch, edit, redeliver and cancel a request, save and reset the settings,
and the same actions offered by the API."""

from __future__ import annotations

from sqlalchemy import func, select

from app.db.models import Batch, Delivery, Request, RequestEvent, Setting
from app.ground.clock import utcnow
from testkit import RunningApp, new_batch, request_payload, wait_until
from testkit.operator_ui import (
    HX,
    assert_toast,
    batch_status,
    building_batch,
    request_id,
    submit,
    wait_batch,
    wait_delivered,
)
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver


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

    # The retry schedule is edited the same way, and checked the same way.
    schedule = await ui.client.post("/settings", data={"delivery_retry_schedule": "5s,soon"}, headers=HX)
    assert_toast(schedule, 422, "bad", "delivery_retry_schedule")
    assert "&#39;soon&#39; is not a wait such as 30s, 5m, 2h or 1d" in schedule.text
    saved = await ui.client.post("/settings", data={"delivery_retry_schedule": "1s,1h"}, headers=HX)
    assert_toast(saved, 200, "ok", "Settings saved")
    assert ui.worker.settings.retry_waits == (1, 3600)

    reset = await ui.client.post("/settings/reset", headers=HX)
    assert reset.status_code == 200 and reset.headers["HX-Redirect"] == "/settings"
    assert ui.worker.settings.delivery_max_attempts == 2
    assert ui.worker.settings.delivery_retry_schedule != "1s,1h"
    assert "overridden" not in (await ui.client.get("/settings")).text


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
