"""The raw limit of bench.local_e2e and bench.delivery, in a process of its own as the gateway's
calls are: N POSTs from C httpx clients (one per slot); prints the seconds taken.

    .venv/bin/python -m bench.direct_client chat BASE_URL N C       # chat completions
    .venv/bin/python -m bench.direct_client hook BASE_URL N C SIZE  # SIZE-byte JSON to /hook
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import httpx

from bench.common import child_output, clients, hammer
from testkit import chat
from testkit.standins.receiver import CUSTOM_ID_HEADER


def chat_call(client: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
    return client.post("/v1/chat/completions", json={"model": "stand-in", "messages": chat(f"say hi to {i}")})


def hook_call(size: int) -> Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]:
    content = b'{"pad":"' + b"x" * max(size - 10, 0) + b'"}'

    def call(client: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
        headers = {"content-type": "application/json", CUSTOM_ID_HEADER: f"raw-{i}"}
        return client.post("/hook", content=content, headers=headers)

    return call


async def main(kind: str, base_url: str, n: int, c: int, size: int) -> None:
    send = chat_call if kind == "chat" else hook_call(size)
    async with clients(base_url, c) as pool:

        async def one(w: int, i: int) -> None:
            (await send(pool[w], i)).raise_for_status()

        print(await hammer(n, c, one, timeout=600))


async def seconds(kind: str, base_url: str, n: int, c: int, size: int = 0, timeout: float = 600) -> float:  # noqa: ASYNC109
    """Run this module as a child process; the seconds it took for the N calls."""
    args = (kind, base_url, str(n), str(c), str(size))
    return float(await child_output("bench.direct_client", *args, timeout=timeout))


if __name__ == "__main__":
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), size))
