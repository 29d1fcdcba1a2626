"""LOCAL_DEFAULT_MODEL (issue 25): a native request, an OpenAI input line or an Anthropic request
that names no model runs on the default model, and a model given always wins; without a default,
a missing model is refused as before. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from app.db.models import Request
from testkit import StartApp, fast_settings, wait_until
from testkit.anthropic_sdk import ended, results_of
from testkit.anthropic_sdk import sdk as anthropic_sdk
from testkit.apps import RunningApp
from testkit.openai_sdk import call, new_batch, sdk, until_status, upload
from testkit.standins.inference import InferenceStandin

DEFAULT = "default-model"


def chat(custom_id: str, model: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": custom_id}]}
    return body | ({"model": model} if model else {})


async def models_run(app: RunningApp, inference: InferenceStandin, *keys: str) -> dict[str, str]:
    """The model each key's call named on the inference server, and the model stored with it."""
    await wait_until(lambda: all(inference.calls_for(k) for k in keys), timeout=20, what=f"calls {keys}")
    async with app.db.transaction() as session:
        stored = dict((await session.execute(select(Request.custom_id, Request.model))).all())
    sent = {k: inference.calls_for(k)[0]["body"]["model"] for k in keys}
    assert {k: stored[k] for k in keys} == sent
    return sent


async def test_a_native_request_without_a_model_runs_on_the_default(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", local_default_model=DEFAULT)
    async with start_app(settings) as app:
        for custom_id, model in (("no-model", None), ("own-model", "stand-in")):
            payload = {
                "custom_id": custom_id,
                "url": "/v1/chat/completions",
                "body": chat(custom_id, model),
                "delivery_config": {"type": "none"},
            }
            answer = await app.client.post("/api/requests", json=payload)
            assert answer.status_code == 202, answer.text
        bulk = [{"custom_id": "bulk-no-model", "url": "/v1/chat/completions", "body": chat("bulk-no-model")}]
        answer = await app.client.post(
            "/api/requests/bulk", json=[item | {"delivery_config": {"type": "none"}} for item in bulk]
        )
        assert answer.status_code in (200, 202, 207), answer.text
        assert await models_run(app, inference, "no-model", "own-model", "bulk-no-model") == {
            "no-model": DEFAULT,
            "own-model": "stand-in",
            "bulk-no-model": DEFAULT,
        }


async def test_without_a_default_a_missing_model_is_refused(database_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(database_url, local_default_model=None)) as app:
        payload = {
            "custom_id": "no-model",
            "url": "/v1/chat/completions",
            "body": chat("no-model"),
            "delivery_config": {"type": "none"},
        }
        answer = await app.client.post("/api/requests", json=payload)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["code"] == "missing_model"


async def test_openai_lines_without_a_model_run_on_the_default(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", local_default_model=DEFAULT)
    async with start_app(settings) as app:
        client = sdk(app)

        def line(custom_id: str, model: str | None) -> bytes:
            body = chat(custom_id, model)
            record = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
            return json.dumps(record).encode() + b"\n"

        file = await upload(client, line("o-1", None), line("o-2", DEFAULT))
        batch = await until_status(client, (await new_batch(client, file.id)).id, "completed")
        assert batch.request_counts is not None and batch.request_counts.completed == 2
        assert await models_run(app, inference, "o-1", "o-2") == {"o-1": DEFAULT, "o-2": DEFAULT}
        output = await call(client.files.content, batch.output_file_id)
        assert sorted(json.loads(row)["custom_id"] for row in output.text.splitlines()) == ["o-1", "o-2"]


async def test_anthropic_requests_without_a_model_run_on_the_default(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    settings = fast_settings(database_url, inference.url + "/v1", local_default_model=DEFAULT)
    async with start_app(settings) as app:
        client = anthropic_sdk(app)
        params = {"max_tokens": 16, "messages": [{"role": "user", "content": "a-1"}]}
        raw = await app.client.post(
            "/v1/messages/batches",
            json={
                "requests": [
                    {"custom_id": "a-1", "params": params},
                    {"custom_id": "a-2", "params": params | {"model": "stand-in"}},
                ]
            },
        )
        assert raw.status_code == 200, raw.text
        batch_id = raw.json()["id"]
        assert (await ended(client, batch_id)).request_counts.succeeded == 2
        assert set(await results_of(client, batch_id)) == {"a-1", "a-2"}
        async with app.db.transaction() as session:
            rows = (await session.execute(select(Request.custom_id, Request.model, Request.body))).all()
        assert {cid: (model, body["model"]) for cid, model, body in rows} == {
            "a-1": (DEFAULT, DEFAULT),
            "a-2": ("stand-in", "stand-in"),
        }
