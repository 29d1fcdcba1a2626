"""The official OpenAI SDK pointed at the OpenAI face: uploading, creating and waiting on batches."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from openai import OpenAI
from openai.types import Batch, FileObject

from testkit.apps import RunningApp
from testkit.builders import request_payload
from testkit.waiting import wait_until

ENDPOINT = "/v1/chat/completions"
T = TypeVar("T")


def line(custom_id: str, url: str = ENDPOINT, **body: Any) -> bytes:
    record = {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": request_payload(custom_id, {}, **body)["body"],
    }
    return json.dumps(record).encode() + b"\n"


def sdk(app: RunningApp, prefix: str = "/v1") -> OpenAI:
    # No retries: every answer is seen as it is (and a wrong x-should-retry cannot hide).
    return OpenAI(base_url=f"{app.url}{prefix}", api_key="x", max_retries=0)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The sync SDK runs in a thread, so the app served on this loop keeps answering."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def upload(client: OpenAI, *lines: bytes, purpose: str = "batch") -> FileObject:
    return await call(client.files.create, file=("input.jsonl", b"".join(lines)), purpose=purpose)  # type: ignore[arg-type]


async def new_batch(client: OpenAI, file_id: str, **extra: Any) -> Batch:
    return await call(
        client.batches.create,
        input_file_id=file_id,
        endpoint=ENDPOINT,  # type: ignore[arg-type]
        completion_window="24h",
        **extra,
    )


async def until_status(client: OpenAI, batch_id: str, *statuses: str, within: float = 30) -> Batch:
    seen: list[Batch] = []

    async def reached() -> bool:
        seen.append(await call(client.batches.retrieve, batch_id))
        return seen[-1].status in statuses

    await wait_until(reached, timeout=within, what=lambda: f"{batch_id} {statuses}, last {seen[-1].status}")
    return seen[-1]
