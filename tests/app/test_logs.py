"""LOG_FORMAT=json (issue 14, item 7): the app as users run it logs one JSON object per line,
uvicorn's own lines included, with the ids of what a line is about."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from testkit import request_payload, wait_until, webhook
from testkit.processes import app_env, app_process
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver


async def test_json_logs_carry_the_delivery_ids(
    sqlite_url: str, inference: InferenceStandin, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    receiver.status_for["refused-1"] = 400  # a permanent failure: logged as a warning
    env = app_env(sqlite_url, inference.url, tmp_path / "data", LOG_FORMAT="json", LOG_LEVEL="info")
    log_path = tmp_path / "app.log"
    with log_path.open("w") as log_file:
        async with app_process(env, stderr=log_file) as (_, url):
            async with httpx.AsyncClient(base_url=url) as client:
                body = request_payload("refused-1", webhook(receiver.url + "/hook"))
                assert (await client.post("/api/requests", json=body)).status_code == 202

            def failed_lines() -> list[dict]:
                lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
                return [line for line in lines if "failed for good" in line["message"]]

            await wait_until(failed_lines, timeout=30, what="the delivery_failed log line")
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records), "uvicorn's lines are not JSON"
    (failed,) = failed_lines()
    assert failed["level"] == "WARNING"
    assert failed["custom_id"] == "refused-1" and failed["delivery_id"].startswith("dlv_")
    # The deliver step was woken from inside the batch's run: it must not carry the run's ids.
    assert "batch_id" not in failed
