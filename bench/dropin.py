"""A 50,000-line OpenAI batch through the drop-in face: memory and speed, against the limit.

    .venv/bin/python -m bench.dropin [--lines 50000] [--line-bytes 1000]

The gateway runs as `batchgate serve` in its own process (SQLite, local backend on the
inference stand-in), so its memory is its own. The official openai SDK uploads the file,
creates the batch, polls it and downloads the output file. Reported: the server's peak RSS
(VmHWM) before and after each phase against the file's size (the upload must not hold the file
in memory), and the upload's MB/s against the limit: the same bytes streamed by httpx to a
no-op route of the same kind of server (uvicorn) in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

from bench.common import print_table
from tests.standins.asgi import send_json
from tests.standins.inference import InferenceStandin
from tests.standins.serve import serve
from tests.support import wait_until

MB = 1024 * 1024


def write_file(path: Path, lines: int, line_bytes: int) -> int:
    padding = "x" * max(line_bytes - 150, 0)
    with path.open("w") as out:
        for i in range(lines):
            body = {"model": "stand-in", "messages": [{"role": "user", "content": f"{i} {padding}"}]}
            out.write(
                json.dumps(
                    {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
                )
                + "\n"
            )
    return path.stat().st_size


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def sink(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    """The limit's server: read the whole body, answer 200 (the no-op of the same stack)."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send_json(send, 200, {"ok": True})


async def raw_upload_seconds(path: Path) -> float:
    """The same multipart upload, by httpx, to `sink` served by uvicorn in its own process."""
    port = free_port()
    args = ("-m", "uvicorn", "bench.dropin:sink", "--port", str(port), "--log-level", "warning")
    server = await asyncio.create_subprocess_exec(sys.executable, *args)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until(lambda: _answers(url + "/"), timeout=60, what="the no-op server up")
        async with httpx.AsyncClient(timeout=600) as client:
            started = time.perf_counter()
            with path.open("rb") as data:
                files = {"file": (path.name, data, "application/jsonl")}
                (
                    await client.post(url + "/upload", data={"purpose": "batch"}, files=files)
                ).raise_for_status()
            return time.perf_counter() - started
    finally:
        server.terminate()
        await server.wait()


async def _answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(url)).status_code < 500
    except httpx.HTTPError:
        return False


async def main(lines: int, line_bytes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bg_bench_dropin_") as tmp:
        root = Path(tmp)
        size = write_file(root / "input.jsonl", lines, line_bytes)
        raw = await raw_upload_seconds(root / "input.jsonl")
        async with serve(InferenceStandin()) as inference_url:
            port = free_port()
            env = {
                **os.environ,
                "DATABASE_URL": f"sqlite+aiosqlite:///{root / 'bench.db'}",
                "DATA_DIR": str(root / "data"),
                "LOCAL_BASE_URL": inference_url + "/v1",
                "LOCAL_CONCURRENCY": "64",
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "LOG_LEVEL": "warning",
            }
            migrate = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "migrate", env=env)
            assert await migrate.wait() == 0, "batchgate migrate failed"
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            server = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "app", "serve", env=env, **quiet
            )
            try:
                await run_batch(
                    server.pid, f"http://127.0.0.1:{port}", root / "input.jsonl", size, raw, lines
                )
            finally:
                server.terminate()
                await server.wait()


async def run_batch(pid: int, url: str, path: Path, size: int, raw: float, lines: int) -> None:
    await wait_until(lambda: _answers(url + "/health"), timeout=60, what="the server up")
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    idle = peak_rss_mb(pid)
    started = time.perf_counter()
    with path.open("rb") as data:
        uploaded = await asyncio.to_thread(client.files.create, file=(path.name, data), purpose="batch")
    upload = time.perf_counter() - started
    after_upload = peak_rss_mb(pid)
    started = time.perf_counter()
    batch = await asyncio.to_thread(
        client.batches.create,
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    created = time.perf_counter() - started

    async def completed() -> bool:
        nonlocal batch
        batch = await asyncio.to_thread(client.batches.retrieve, batch.id)
        return batch.status in ("completed", "failed", "expired", "cancelled")

    await wait_until(completed, timeout=1800, interval=0.5, what="the batch completed")
    ran = time.perf_counter() - started
    assert batch.status == "completed", batch.status
    after_run = peak_rss_mb(pid)
    print_table(
        f"bench.dropin: {lines} lines, {size / MB:.1f} MB input file",
        [
            (
                "upload",
                f"{size / MB / upload:.1f} MB/s; limit (httpx to a no-op route) "
                f"{size / MB / raw:.1f} MB/s; ratio {raw / upload:.2f}",
            ),
            ("create (validate + insert)", f"{created:.1f} s ({lines / created:,.0f} lines/s)"),
            ("create to completed", f"{ran:.1f} s ({lines / ran:,.0f} requests/s)"),
            ("server peak RSS, idle", f"{idle:.0f} MB"),
            (
                "server peak RSS after upload",
                f"{after_upload:.0f} MB (+{after_upload - idle:.0f} MB for a {size / MB:.0f} MB file)",
            ),
            ("server peak RSS after the run", f"{after_run:.0f} MB"),
        ],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.dropin", description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--line-bytes", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.lines, args.line_bytes))
