"""End to end with a real model: the embedded model (llama.cpp serving gemma3 270M, started by the
app itself as LOCAL_BASE_URL is unset) behind the local backend, driven by the official OpenAI and
Anthropic SDKs exactly as their batch documentation shows, changing only the base URL. Runs when
`.[realmodel]` is installed (CI installs it)."""

from __future__ import annotations

import asyncio
import io
import json

import anthropic
import openai
import pytest

from testkit import StartApp, wait_until
from testkit.realmodel import MODEL, embedded_settings, require_model, wait_ready

pytestmark = pytest.mark.xdist_group("realmodel")  # one model server at a time on 2 cores

# Twenty lines, as issue 25's first-contact check runs them, through the SDKs' documented paths.
PROMPTS = {
    "capital": "What is the capital of France? Answer in one word.",
    "count": "Count from 1 to 3.",
    **{f"sum-{i}": f"What is {i} plus {i}?" for i in range(18)},
}


@pytest.fixture(autouse=True)
def _model_installed() -> None:
    require_model()


async def test_the_openai_batch_flow_runs_on_a_real_model(sqlite_url: str, start_app: StartApp) -> None:
    # Sent at once: the lines wait for the embedded model while it loads.
    async with start_app(embedded_settings(sqlite_url)) as app:
        client = openai.OpenAI(base_url=f"{app.url}/api/openai", api_key="unused")
        lines = [
            {
                "custom_id": name,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 8},
            }
            for name, text in PROMPTS.items()
        ]
        data = "\n".join(json.dumps(line) for line in lines).encode()
        batch_file = await asyncio.to_thread(
            client.files.create, file=("requests.jsonl", io.BytesIO(data)), purpose="batch"
        )
        batch = await asyncio.to_thread(
            client.batches.create,
            input_file_id=batch_file.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"description": "real model"},
        )

        async def completed() -> bool:
            nonlocal batch
            batch = await asyncio.to_thread(client.batches.retrieve, batch.id)
            return batch.status in ("completed", "failed", "expired", "cancelled")

        await wait_until(completed, timeout=180, interval=0.5, what="the batch completed")
        assert batch.status == "completed", batch
        assert batch.request_counts is not None and batch.request_counts.completed == len(PROMPTS)
        assert batch.output_file_id is not None and batch.error_file_id is None
        content = await asyncio.to_thread(client.files.content, batch.output_file_id)
        results = {r["custom_id"]: r for r in map(json.loads, content.text.splitlines())}
        assert set(results) == set(PROMPTS)
        for result in results.values():
            assert result["error"] is None and result["response"]["status_code"] == 200
            assert result["response"]["body"]["model"] == MODEL
            text = result["response"]["body"]["choices"][0]["message"]["content"]
            assert isinstance(text, str) and text.strip(), result


async def test_the_anthropic_batch_flow_runs_on_a_real_model(sqlite_url: str, start_app: StartApp) -> None:
    async with start_app(embedded_settings(sqlite_url)) as app:
        health = await wait_ready(app)
        assert health["embedded"]["model"] == MODEL
        assert health["backends"][0]["reachable"] and MODEL in health["backends"][0]["detail"]
        client = anthropic.Anthropic(base_url=f"{app.url}/api/anthropic", api_key="unused")
        batch = await asyncio.to_thread(
            client.messages.batches.create,
            requests=[
                {
                    "custom_id": name,
                    "params": {
                        "model": MODEL,
                        "max_tokens": 8,
                        "messages": [{"role": "user", "content": text}],
                    },
                }
                for name, text in PROMPTS.items()
            ],
        )

        async def ended() -> bool:
            nonlocal batch
            batch = await asyncio.to_thread(client.messages.batches.retrieve, batch.id)
            return batch.processing_status == "ended"

        await wait_until(ended, timeout=180, interval=0.5, what="the message batch ended")
        assert batch.request_counts.succeeded == len(PROMPTS)
        results = {
            r.custom_id: r.result
            for r in await asyncio.to_thread(lambda: list(client.messages.batches.results(batch.id)))
        }
        assert set(results) == set(PROMPTS)
        for result in results.values():
            assert result.type == "succeeded"
            message = result.message
            assert message.content and message.content[0].type == "text" and message.content[0].text.strip()
            assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens > 0
