from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from testkit.standins.anthropic_batch import AnthropicBatchStandin
from testkit.standins.serve import serve


@pytest.fixture
async def anthropic_api() -> AsyncIterator[AnthropicBatchStandin]:
    """The stand-in Message Batches API, served on a loopback port."""
    standin = AnthropicBatchStandin()
    async with serve(standin) as url:
        standin.url = url  # type: ignore[attr-defined]
        yield standin
