"""Named backends from a backends file (issue 27): two OpenAI-compatible servers side by side,
each request on the backend whose model patterns match (or the one it names), each backend with
its own batch limits and its own status, and a model nobody serves refused at intake."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from testkit import StartApp, fast_settings, request_payload, webhook
from testkit.openai_sdk import line, new_batch, sdk, until_status, upload
from testkit.standins.anthropic_batch import BATCHES, AnthropicBatchStandin
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver
from testkit.standins.serve import serve


@pytest.fixture
async def second_inference() -> AsyncIterator[InferenceStandin]:
    standin = InferenceStandin()
    async with serve(standin) as url:
        standin.url = url  # type: ignore[attr-defined]
        yield standin


CLAUDE_KEY = "BATCHGATE_TEST_NAMED_CLAUDE_KEY"


@pytest.fixture(autouse=True)
def claude_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CLAUDE_KEY, "sk-ant-test")


def backends_file(tmp_path: Path, alpha: str, beta: str, claude: str = "http://127.0.0.1:9") -> str:
    path = tmp_path / "backends.toml"
    path.write_text(
        f"""
[backends.alpha]
kind = "openai-compatible"
base_url = "{alpha}/v1"
models = ["llama3*", "shared-*"]

[backends.beta]
kind = "openai-compatible"
base_url = "{beta}/v1"
models = ["qwen*", "shared-*"]
batch_max_requests = 2
batch_max_age_seconds = 60

[backends.claude]
kind = "anthropic-batch"
base_url = "{claude}"
api_key_env = "{CLAUDE_KEY}"
models = ["claude-*"]
batch_max_age_seconds = 0.2
poll_seconds = 0.05
"""
    )
    return str(path)


async def test_each_model_runs_only_on_its_backend(
    database_url: str,
    inference: InferenceStandin,
    second_inference: InferenceStandin,
    anthropic_api: AnthropicBatchStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    tmp_path: Path,
) -> None:
    urls = (inference.url, second_inference.url, anthropic_api.url)  # type: ignore[attr-defined]
    settings = fast_settings(database_url, backends_file=backends_file(tmp_path, *urls))
    hook = webhook(receiver.url + "/hook")  # type: ignore[attr-defined]
    requests = {
        "l-1": ("llama3.2", None),
        "l-2": ("llama3:8b", None),
        "q-1": ("qwen2.5", None),
        "q-2": ("qwen2.5", None),
        "q-3": ("qwen2.5", None),
        "q-4": ("qwen2.5", None),
        "s-1": ("shared-model", None),  # alpha comes first in the file
        "s-2": ("shared-model", "beta"),  # named: beta, whatever the patterns say
        "s-3": ("shared-model", "beta"),
        "c-1": ("claude-haiku-4-5", None),  # Anthropic's batch API, beside the two servers
        "c-2": ("claude-haiku-4-5", None),
    }
    async with start_app(settings) as app:
        for custom_id, (model, backend) in requests.items():
            body = request_payload(custom_id, hook, model=model)
            if backend:
                body["backend"] = backend
            answer = await app.client.post("/api/requests", json=body)
            assert answer.status_code == 202, answer.text
        await receiver.wait_for(lambda r: len(r.successes()) == len(requests), timeout=30)
        on_alpha = {call["key"] for call in inference.calls}
        on_beta = {call["key"] for call in second_inference.calls}
        assert on_alpha == {"l-1", "l-2", "s-1"} and on_beta == {"q-1", "q-2", "q-3", "q-4", "s-2", "s-3"}
        assert all(r.json["response"]["status_code"] == 200 for r in receiver.successes())
        # Both Claude requests went to Anthropic (in one batch, or two if the first closed
        # before the second arrived), none to the servers above.
        assert 1 <= anthropic_api.calls.count(("POST", BATCHES)) <= 2

        # beta's own limit: its six requests (two groups) closed batches of 2; its age, 60 s,
        # never came (alpha's batches close by the global age, 0.3 s).
        on_beta_ids = ("q-1", "q-2", "q-3", "q-4", "s-2", "s-3")
        details = [(await app.client.get(f"/api/requests/{c}")).json() for c in on_beta_ids]
        sizes = Counter(d["batch_id"] for d in details)
        assert {d["backend"] for d in details} == {"beta"} and sorted(sizes.values()) == [2, 2, 2]

        health = (await app.client.get("/health")).json()
        shown = {b["name"]: b for b in health["backends"]}
        assert set(shown) == {"alpha", "beta", "claude"}, health["backends"]
        assert shown["alpha"]["target"] == f"{inference.url}/v1"  # type: ignore[attr-defined]
        assert shown["alpha"]["reachable"] and shown["beta"]["reachable"]

        scraped = (await app.client.get("/metrics")).text
        for name in ("alpha", "beta"):
            assert f'batchgate_backend_up{{backend="{name}"}} 1.0' in scraped
            assert f'batchgate_backend_in_flight{{backend="{name}"}} 0.0' in scraped
            assert f'batchgate_backend_call_seconds_count{{backend="{name}",outcome="ok"}}' in scraped
        assert 'batchgate_backend_concurrency{backend="beta"}' in scraped


async def test_a_model_no_backend_serves_is_refused_at_intake(
    sqlite_url: str, inference: InferenceStandin, start_app: StartApp, tmp_path: Path
) -> None:
    path = backends_file(tmp_path, inference.url, inference.url)  # type: ignore[attr-defined]
    async with start_app(fast_settings(sqlite_url, backends_file=path, scheduler_enabled=False)) as app:
        answer = await app.client.post(
            "/api/requests", json=request_payload("m-1", {"type": "none"}, model="mistral")
        )
        assert answer.status_code == 422
        error = answer.json()["errors"][0]
        assert error["code"] == "no_backend" and error["source"]["pointer"] == "/body/model"
        assert "alpha: llama3*, shared-*" in error["detail"] and "beta: qwen*" in error["detail"]

        body = request_payload("m-2", {"type": "none"}, model="llama3")
        answer = await app.client.post("/api/requests", json={**body, "backend": "gamma"})
        assert answer.status_code == 422
        error = answer.json()["errors"][0]
        assert error["code"] == "invalid_backend" and "alpha, beta" in error["detail"]

        # The bulk path refuses the same item for the same reason, and keeps the good one.
        items = [request_payload("b-1", {"type": "none"}, model="mistral"), body]
        answer = await app.client.post("/api/requests/bulk", json=items)
        results = answer.json()["results"]
        assert results[0]["errors"][0]["code"] == "no_backend" and results[1]["status"] == "pending"

        assert (await app.client.get("/api/requests/m-1")).status_code == 404


async def test_a_dropin_batch_runs_on_the_backend_its_metadata_names(
    database_url: str,
    inference: InferenceStandin,
    second_inference: InferenceStandin,
    start_app: StartApp,
    tmp_path: Path,
) -> None:
    path = backends_file(tmp_path, inference.url, second_inference.url)  # type: ignore[attr-defined]
    async with start_app(fast_settings(database_url, backends_file=path)) as app:
        client = sdk(app)
        uploaded = await upload(client, line("d-1", model="shared-x"), line("d-2", model="shared-x"))
        named = await new_batch(client, uploaded.id, metadata={"batchgate_backend": "beta"})
        await until_status(client, named.id, "completed")
        assert {c["key"] for c in second_inference.calls} == {"d-1", "d-2"} and not inference.calls

        # A model no backend serves is refused at create (400, as OpenAI refuses), naming what is served.
        other = await upload(client, line("d-3", model="mistral"))
        with pytest.raises(openai.BadRequestError, match="No backend serves model 'mistral'"):
            await new_batch(client, other.id)
