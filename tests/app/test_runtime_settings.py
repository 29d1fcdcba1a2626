"""The settings in force have one owner: a value saved on the settings page applies to intake,
the batcher and the cost shown, in this process at once, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from app.db.session import Database
from testkit import StartApp, fast_settings, new_batch, request_payload

HX = {"HX-Request": "true"}
NOWHERE = {"type": "none"}


async def test_batch_max_bytes_saved_in_the_ui_applies_to_intake_at_once(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        big = request_payload("big/1", NOWHERE, messages=[{"role": "user", "content": "x" * 2000}])
        assert (await app.client.post("/api/requests", json=big)).status_code == 202

        saved = await app.client.post("/settings", data={"batch_max_bytes": "1000"}, headers=HX)
        assert saved.status_code == 200, saved.text

        big["custom_id"] = "big/2"
        refused = await app.client.post("/api/requests", json=big)
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["errors"]
        assert error["code"] == "request_too_large" and "may hold 1000" in error["detail"]
        small = request_payload("small/1", NOWHERE)
        assert (await app.client.post("/api/requests", json=small)).status_code == 202

        reset = await app.client.post("/settings/reset", headers=HX)
        assert reset.status_code == 200
        assert (await app.client.post("/api/requests", json=big)).status_code == 202


async def test_prices_saved_in_the_ui_show_in_the_cost_of_a_batch(
    database_url: str, start_app: StartApp
) -> None:
    settings = fast_settings(database_url, scheduler_enabled=False)
    async with start_app(settings) as app:
        batch_id = await _finished_openai_batch(app.db)
        before = (await app.client.get(f"/api/batches/{batch_id}")).json()["cost"]
        assert before["priced_as"] == "gpt-4o-mini"  # the built-in list price

        prices = {"gpt-4o-mini-2024": {"input": 100.0, "output": 100.0}}
        saved = await app.client.post("/settings", data={"openai_prices": json.dumps(prices)}, headers=HX)
        assert saved.status_code == 200, saved.text

        after = (await app.client.get(f"/api/batches/{batch_id}")).json()["cost"]
        # 1,000,000 input + 1,000,000 output tokens at $100 per million each.
        assert after["priced_as"] == "gpt-4o-mini-2024"
        assert after["synchronous_usd"] == 200.0 and after["batch_usd"] == 100.0
        listed = (await app.client.get("/api/batches")).json()["data"][0]["cost"]
        assert listed == after
        page = (await app.client.get(f"/batches/{batch_id}")).text
        assert "$100.0000" in page and "gpt-4o-mini-2024 prices" in page


async def _finished_openai_batch(db: Database) -> int:
    """A done OpenAI batch with usage, as the collector leaves one."""
    batch = new_batch(
        backend="openai",
        model="gpt-4o-mini-2024-07-18",
        request_count=1,
        completed_count=1,
        input_tokens=1_000_000,
        cached_tokens=0,
        output_tokens=1_000_000,
        reasoning_tokens=0,
    )
    async with db.transaction() as session:
        session.add(batch)
    return int(batch.id)
