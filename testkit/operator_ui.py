"""Driving the operator UI over HTTP against a running app: requests submitted, the building batch
found, statuses and deliveries waited for in the database, and the UI's toast answers checked."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from app.db.models import Batch, Delivery, Request
from testkit import RunningApp, request_payload, wait_until
from testkit.standins.receiver import WebhookReceiver

HX = {"HX-Request": "true"}


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
