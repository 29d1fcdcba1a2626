"""Secrets stay secret (issue 14, item 6): no key, token, webhook secret or password shows in the
settings' repr, the logs, an error answer, a UI page or /health."""

from __future__ import annotations

import base64
import logging

import pytest

from testkit import StartApp, fast_settings, migrate, postgres_database, request_payload, webhook
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver

API_KEY = "bgkey-api-1f6d0c"
SECRETS = {
    "api_keys": API_KEY,
    "openai_api_key": "sk-openai-9a8b7c",
    "local_api_key": "local-key-5e4d3c",
    "webhook_secret": "whsec_" + base64.b64encode(b"webhook-secret-2b1a09").decode(),
    "batch_events_webhook_secret": "whsec_" + base64.b64encode(b"events-secret-77aa66").decode(),
    "session_secret": "session-secret-4e3d2c",
    "secrets_key": "pN3Vq1f0m9dXb1eH2wq7r4k5s6t8u9v0w1x2y3z4a5c=",
}
DB_PASSWORD = "db-password-3c2b1a"
BROKER_PASSWORD = "broker-password-6f5e4d"


def leaks(text: str) -> list[str]:
    """Which secrets (or the base64 of the signing ones) appear in `text`."""
    values = [*SECRETS.values(), DB_PASSWORD, BROKER_PASSWORD]
    values += [v.removeprefix("whsec_") for v in values if v.startswith("whsec_")]
    return [v for v in values if v in text]


@pytest.mark.postgres
async def test_no_secret_in_repr_logs_answers_ui_or_health(
    inference: InferenceStandin,
    receiver: WebhookReceiver,
    start_app: StartApp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with postgres_database() as url:
        await migrate(url)
        # PostgreSQL here trusts any password; a wrong broker password makes the broker fail.
        with_password = url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
        assert with_password != url
        settings = fast_settings(
            with_password,
            inference.url + "/v1",
            rabbitmq_url=f"amqp://guest:{BROKER_PASSWORD}@127.0.0.1:5672/",
            **SECRETS,
        )
        assert not leaks(repr(settings)) and not leaks(str(settings))
        async with start_app(settings) as app:
            client = app.client
            keyed = {"authorization": f"Bearer {API_KEY}"}
            body = request_payload("secret-1", webhook(receiver.url + "/hook"))
            assert (await client.post("/api/requests", json=body, headers=keyed)).status_code == 202
            await receiver.wait_for(lambda r: len(r.successes()) >= 1, timeout=30)
            login = await client.post("/login", data={"key": API_KEY})  # the UI pages, not the form
            assert login.status_code == 303 and login.headers["location"] == "/"
            answers = [
                login,
                await client.get("/health"),
                await client.get("/"),
                await client.get("/settings"),
                await client.get("/batches"),
                await client.get("/requests"),
                await client.get("/requests/1"),
                await client.get("/api/requests/secret-1", headers=keyed),
                await client.get("/api/requests", headers={"authorization": "Bearer wrong"}),
                await client.post("/api/requests", content=b"{", headers=keyed),
                await client.get("/v1/batches", headers={"authorization": "Bearer wrong"}),
            ]
    for answer in answers:
        assert not leaks(answer.text + str(answer.headers)), answer.request.url
    assert all(a.status_code != 303 for a in answers[1:7]), "a UI page was not shown"
    assert not leaks(caplog.text)
    # The receiver got the signature, never the secret itself.
    assert not leaks(str([r.headers for r in receiver.received]))
