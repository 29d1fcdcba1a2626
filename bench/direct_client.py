"""The limit of bench.local_e2e, in a process of its own as the gateway is: N chat completions to
an OpenAI-compatible server from C httpx clients (one per slot); prints the seconds taken.

    .venv/bin/python -m bench.direct_client BASE_URL N C
"""

from __future__ import annotations

import asyncio
import sys

from bench.common import clients, hammer
from tests.support import chat


async def main(base_url: str, n: int, c: int) -> None:
    async with clients(base_url, c) as pool:

        async def call(w: int, i: int) -> None:
            body = {"model": "stand-in", "messages": chat(f"say hi to {i}")}
            (await pool[w].post("/v1/chat/completions", json=body)).raise_for_status()

        print(await hammer(n, c, call, timeout=600))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
