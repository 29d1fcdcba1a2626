"""The app the UI tests drive: batches stay building until the operator closes them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from testkit import RunningApp, StartApp, fast_settings
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import WebhookReceiver


@pytest.fixture
async def ui(
    database_url: str, inference: InferenceStandin, receiver: WebhookReceiver, start_app: StartApp
) -> AsyncIterator[RunningApp]:
    # Batches stay `building` until closed by the operator (or 50 requests), so tests control timing.
    settings = fast_settings(
        database_url,
        inference.url + "/v1",
        local_batch_max_age_seconds=3600,
        batch_max_requests=50,
        delivery_max_attempts=2,
    )
    async with start_app(settings) as app:
        yield app
