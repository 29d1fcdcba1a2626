"""The Anthropic backend wired into the app: a backends file names an anthropic-batch backend
beside an inference server; requests for Claude models are batched for it, created once at the
stand-in, polled, collected and delivered, and /health shows the backend; each on SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit import StartApp, fast_settings, request_payload, wait_until, webhook
from testkit.standins.anthropic_batch import BATCHES, AnthropicBatchStandin
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

KEY_VARIABLE = "BATCHGATE_TEST_ANTHROPIC_KEY"


def backends_file(tmp_path: Path, inference: str, anthropic: str) -> str:
    path = tmp_path / "backends.toml"
    path.write_text(
        f"""
[backends.local]
kind = "openai-compatible"
base_url = "{inference}/v1"
models = ["llama*"]

[backends.claude]
kind = "anthropic-batch"
base_url = "{anthropic}"
api_key_env = "{KEY_VARIABLE}"
models = ["claude-*"]
batch_max_age_seconds = 0.2
poll_seconds = 0.05
"""
    )
    return str(path)


async def test_claude_requests_run_on_the_anthropic_backend_and_are_delivered(
    database_url: str,
    inference: InferenceStandin,
    anthropic_api: AnthropicBatchStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, "sk-ant-test")
    path = backends_file(tmp_path, inference.url, anthropic_api.url)  # type: ignore[attr-defined]
    hook = webhook(receiver.url + "/hook")  # type: ignore[attr-defined]
    async with start_app(fast_settings(database_url, backends_file=path)) as app:
        payloads = []
        for custom_id in ("c/1", "c/2"):
            payload = request_payload(custom_id, hook)
            payload["body"]["model"] = "claude-haiku-4-5"
            payloads.append(payload)
        answer = await app.client.post("/api/requests/bulk", json=payloads)
        assert answer.status_code == 200 and answer.json()["rejected"] == 0, answer.text

        async def delivered() -> bool:
            return len(receiver.by_custom_id()) == 2

        await wait_until(delivered, timeout=30, what="both Claude results delivered")
        for custom_id in ("c/1", "c/2"):
            detail = (await app.client.get(f"/api/requests/{custom_id}")).json()
            assert detail["status"] == "succeeded", detail
            body = detail["result"]["response"]["body"]
            assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
        [batch] = (await app.client.get("/api/batches", params={"limit": 10})).json()["data"]
        assert batch["backend"] == "claude" and batch["status"] == "done"
        assert anthropic_api.calls.count(("POST", BATCHES)) == 1
        detail = (await app.client.get(f"/api/batches/{batch['id']}")).json()
        assert detail["cost"]["priced_as"] == "claude-haiku-4-5"
        assert detail["cost"]["batch_usd"] == pytest.approx(detail["cost"]["synchronous_usd"] / 2)
        health = (await app.client.get("/health")).json()
        assert "claude" in str(health)
