"""Drop-in batches through both faces: memory and speed, against the limit.

    .venv/bin/python -m bench.dropin [--face openai|anthropic|both] [--lines 50000]
                                     [--requests 100000] [--line-bytes 1000] [--no-run]
                                     [--rounds 1] [--profile FILE]

The gateway runs as `batchgate serve` in its own process (SQLite, local backend on the
inference stand-in), so its memory is its own. The server's peak RSS (VmHWM) is read before and
after each phase, against the size of what was sent: neither face may hold its input in memory.
The limit for sending is the same bytes sent by httpx to a no-op route of the same kind of
server (uvicorn) in its own process, in the same run.

The OpenAI face's batch create has a limit of its own, in the same run: a raw executemany of the
same rows (`bench.raw_durable create`, in a process of its own) into a SQLite database of its own, of
the same schema, pragmas and disk: read the file once, decode each line, insert the requests
rows the gateway writes, 1,000 a statement, all in one transaction (a batch is created whole or
not at all). Its goal: the create at 0.7 of that limit's lines/s. `--rounds R` (with --no-run)
creates R batches from the one upload, each after the limit's round on the same raw database;
the figure is the median of the per-round ratios. With --no-run the server's scheduler is off:
only the create is measured, not a run started behind it. `--profile FILE` samples the server
with py-spy during the creates (bench.pyspy) and prints where its time went.

- openai: the official openai SDK uploads a `--lines` file, creates the batch and polls it to
  completed (with --no-run, stops after the create, as `make bench` does).
- anthropic: httpx POSTs a `--requests` request list to /v1/messages/batches (the body the
  Anthropic SDK sends) to a server whose scheduler is off, so only the create is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path

import httpx
import openai
from openai.types import Batch

from bench import pyspy, raw_durable, summary
from bench.common import print_table
from testkit import wait_until
from testkit.processes import free_port
from testkit.standins.asgi import send_json
from testkit.standins.inference import InferenceStandin
from testkit.standins.serve import serve

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
    return status_mb(pid, "VmHWM")


def status_mb(pid: int, field: str) -> float:
    """A memory figure of the process (VmRSS, VmHWM, ...) from /proc, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def sink(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    """The limit's server: read the whole body, answer 200 (the no-op of the same stack)."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send_json(send, 200, {"ok": True})


def write_request_list(path: Path, requests: int, line_bytes: int) -> int:
    """An Anthropic create body of `requests` entries of about `line_bytes` each."""
    padding = "x" * max(line_bytes - 150, 0)
    with path.open("w") as out:
        out.write('{"requests": [')
        for i in range(requests):
            params = {"model": "stand-in", "max_tokens": 16, "temperature": 0.7}
            params["messages"] = [{"role": "user", "content": f"{i} {padding}"}]
            out.write(("," if i else "") + json.dumps({"custom_id": f"r{i}", "params": params}))
        out.write("]}")
    return path.stat().st_size


Send = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


def upload_form(path: Path) -> Send:
    """The multipart upload of `path` (purpose, then the file), as the openai SDK sends it."""

    async def send(client: httpx.AsyncClient, url: str) -> httpx.Response:
        with path.open("rb") as data:
            files = {"file": (path.name, data, "application/jsonl")}
            return await client.post(url + "/upload", data={"purpose": "batch"}, files=files)

    return send


def post_json(body: bytes, route: str = "/v1/messages/batches") -> Send:
    async def send(client: httpx.AsyncClient, url: str) -> httpx.Response:
        return await client.post(url + route, content=body, headers={"content-type": "application/json"})

    return send


async def raw_seconds(send: Send) -> float:
    """The same bytes, by httpx, to `sink` served by uvicorn in its own process."""
    port = free_port()
    args = ("-m", "uvicorn", "bench.dropin:sink", "--port", str(port), "--log-level", "warning")
    server = await asyncio.create_subprocess_exec(sys.executable, *args)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until(lambda: _answers(url + "/"), timeout=60, what="the no-op server up")
        async with httpx.AsyncClient(timeout=600) as client:
            started = time.perf_counter()
            (await send(client, url)).raise_for_status()
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


async def migrate(env: dict[str, str]) -> None:
    migrating = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "migrate", env=env)
    assert await migrating.wait() == 0, "batchgate migrate failed"


async def raw_create_seconds(root: Path, path: Path, lines: int) -> float:
    """The create's limit (bench.raw_durable create) on a database of its own beside the gateway's."""
    url = f"sqlite+aiosqlite:///{root / 'raw.db'}"
    if not (root / "raw.db").exists():
        await migrate({**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"})
    result = await raw_durable.run("create", url, str(path))
    assert result["stored"] == lines, result
    return result["seconds"]


@asynccontextmanager
async def gateway(root: Path, **variables: str) -> AsyncIterator[tuple[int, str]]:
    """`batchgate serve` in its own process on a fresh SQLite database: (its pid, its URL)."""
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
            **variables,
        }
        await migrate(env)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        server = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "serve", env=env, **quiet)
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_until(lambda: _answers(url + "/health"), timeout=60, what="the server up")
            yield server.pid, url
        finally:
            server.terminate()
            await server.wait()


PROFILE: Path | None = None  # --profile: where py-spy writes the create's samples
ROUNDS = 1  # --rounds: creates (each after its limit's round), with --no-run


def profiled(pid: int) -> AbstractAsyncContextManager[None]:
    return pyspy.recording(pid, PROFILE) if PROFILE else nullcontext()


async def openai_case(lines: int, line_bytes: int, run: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="bg_bench_dropin_") as tmp:
        root = Path(tmp)
        size = write_file(root / "input.jsonl", lines, line_bytes)
        raw = await raw_seconds(upload_form(root / "input.jsonl"))
        async with gateway(root, **({} if run else {"SCHEDULER_ENABLED": "false"})) as (pid, url):
            await run_batch(pid, url, root, size, raw, lines, run)


async def anthropic_case(requests: int, line_bytes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bg_bench_dropin_") as tmp:
        root = Path(tmp)
        size = write_request_list(root / "body.json", requests, line_bytes)
        body = (root / "body.json").read_bytes()  # the client's memory, not the server's
        raw = await raw_seconds(post_json(body))
        async with gateway(root, SCHEDULER_ENABLED="false") as (pid, url):
            idle = peak_rss_mb(pid)
            async with httpx.AsyncClient(base_url=url, timeout=1800) as client:
                started = time.perf_counter()
                answer = await post_json(body)(client, "")
                created = time.perf_counter() - started
            assert answer.status_code == 200, answer.text[:500]
            assert answer.json()["request_counts"]["processing"] == requests, answer.text[:500]
            after = peak_rss_mb(pid)
            left = list((root / "data" / "tmp").glob("*"))
    print_table(
        f"bench.dropin anthropic: {requests} requests, {size / MB:.1f} MB body",
        [
            (
                "create (stream + validate + insert)",
                f"{created:.1f} s ({requests / created:,.0f} requests/s, {size / MB / created:.1f} MB/s)",
            ),
            ("limit (httpx to a no-op route)", f"{raw:.2f} s ({size / MB / raw:.1f} MB/s)"),
            ("create / limit", f"ratio {raw / created:.3f}"),
            ("server peak RSS, idle", f"{idle:.0f} MB"),
            (
                "server peak RSS after create",
                f"{after:.0f} MB (+{after - idle:.0f} MB for a {size / MB:.0f} MB body)",
            ),
            ("temporary files left under DATA_DIR/tmp", str(len(left))),
        ],
    )


async def main(face: str, lines: int, requests: int, line_bytes: int, run: bool) -> None:
    if face in ("openai", "both"):
        await openai_case(lines, line_bytes, run)
    if face in ("anthropic", "both"):
        await anthropic_case(requests, line_bytes)


async def run_batch(pid: int, url: str, root: Path, size: int, raw: float, lines: int, run: bool) -> None:
    """Upload root/input.jsonl, create (ROUNDS times, each after the limit's round), and with
    `run`, run to completed; `raw`: the limit's upload seconds."""
    path = root / "input.jsonl"
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    idle = peak_rss_mb(pid)
    started = time.perf_counter()
    with path.open("rb") as data:
        uploaded = await asyncio.to_thread(client.files.create, file=(path.name, data), purpose="batch")
    upload = time.perf_counter() - started
    after_upload = peak_rss_mb(pid)
    limits, creates = [], []
    for _ in range(ROUNDS):
        limits.append(await raw_create_seconds(root, path, lines))
        async with profiled(pid):
            started = time.perf_counter()
            batch = await asyncio.to_thread(
                client.batches.create,
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            creates.append(time.perf_counter() - started)
        assert batch.request_counts is not None and batch.request_counts.total == lines, batch
        print(f"round {len(creates)}/{ROUNDS}: create {creates[-1]:.2f} s, raw {limits[-1]:.2f} s")
    created, raw_create = statistics.median(creates), statistics.median(limits)
    ran, after_run = await completion(client, batch, started, pid) if run else (None, None)
    print_table(
        f"bench.dropin openai: {lines} lines, {size / MB:.1f} MB input file",
        [
            (
                "upload",
                f"{size / MB / upload:.1f} MB/s; limit (httpx to a no-op route) "
                f"{size / MB / raw:.1f} MB/s; ratio {raw / upload:.2f}",
            ),
            ("create (validate + insert), median", f"{created:.1f} s ({lines / created:,.0f} lines/s)"),
            (
                "limit (raw executemany, 1 transaction)",
                f"{raw_create:.1f} s ({lines / raw_create:,.0f} lines/s); ratio {raw_create / created:.2f}",
            ),
            ("create to completed", f"{ran:.1f} s ({lines / ran:,.0f} requests/s)" if ran else "not run"),
            ("server peak RSS, idle", f"{idle:.0f} MB"),
            (
                "server peak RSS after upload",
                f"{after_upload:.0f} MB (+{after_upload - idle:.0f} MB for a {size / MB:.0f} MB file)",
            ),
            ("server peak RSS after the run", f"{after_run:.0f} MB" if after_run else "not run"),
        ],
    )
    report_openai(lines, size, (upload, raw), (creates, limits), (idle, after_upload, after_run))


async def completion(client: openai.OpenAI, batch: Batch, started: float, pid: int) -> tuple[float, float]:
    """Poll the batch to completed; (seconds since `started`, the server's peak RSS after)."""

    async def completed() -> bool:
        nonlocal batch
        batch = await asyncio.to_thread(client.batches.retrieve, batch.id)
        return batch.status in ("completed", "failed", "expired", "cancelled")

    await wait_until(completed, timeout=1800, interval=0.5, what="the batch completed")
    ran = time.perf_counter() - started
    assert batch.status == "completed", batch.status
    return ran, peak_rss_mb(pid)


def report_openai(
    lines: int,
    size: int,
    uploads: tuple[float, float],
    creates: tuple[list[float], list[float]],
    rss: tuple[float, float, float | None],
) -> None:
    """The goal's outcome: the create's lines/s against the raw executemany's, per round (the
    upload's MB/s against httpx to a no-op route rides along in `measured`)."""
    (upload, raw), (created, limits) = uploads, creates
    summary.report(
        summary.Outcome(
            path=f"OpenAI face: batch create, {lines:,} lines (sqlite)",
            measured=f"create {summary.rates([lines / c for c in created], 'lines/s')}, raw executemany "
            f"{summary.rates([lines / c for c in limits], 'lines/s')}; upload {size / MB / upload:.1f} MB/s "
            f"({raw / upload:.2f} of httpx to a no-op route)",
            figures=summary.ratios(limits, created),
            goal=0.7,
        )
    )
    idle, after_upload, _ = rss
    # Printed for the record only: bench.memory measures the upload's memory from current RSS;
    # a peak (VmHWM) cannot see growth below the start-up peak (issue 30).
    print(f"server peak RSS {idle:.0f} MB idle, {after_upload:.0f} MB after the upload")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.dropin", description=__doc__.split("\n")[0])
    parser.add_argument("--face", choices=("openai", "anthropic", "both"), default="both")
    parser.add_argument("--lines", type=int, default=50_000, help="the OpenAI input file's lines")
    parser.add_argument("--requests", type=int, default=100_000, help="the Anthropic request list's length")
    parser.add_argument("--line-bytes", type=int, default=1000, help="the size of one request")
    parser.add_argument("--no-run", action="store_true", help="stop after the batch create")
    parser.add_argument("--rounds", type=int, default=1, help="batch creates (with --no-run)")
    parser.add_argument("--profile", type=Path, help="sample the server with py-spy during the creates")
    args = parser.parse_args()
    if args.rounds > 1 and not args.no_run:
        parser.error("--rounds needs --no-run: the batches of earlier rounds would run during later ones")
    PROFILE, ROUNDS = args.profile, args.rounds
    asyncio.run(main(args.face, args.lines, args.requests, args.line_bytes, run=not args.no_run))
