"""Issue 29, defect 5 as it was found: 600 uploads sending a byte a second to a server limited to
1,024 file descriptors made /health and intake refuse connections (every upload held its socket
and its spooled file). With the upload caps (UPLOADS_MAX, UPLOADS_PER_KEY) the uploads past them
are refused at once, before a file is opened, and the server keeps answering."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx

from testkit import NO_DELIVERY, request_payload
from testkit.processes import app_env, app_process

UPLOADS = 600
DESCRIPTORS = 1024
# A file part whose bytes then trickle in: each upload has its socket and its spooled file open.
FILE_PART = (
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n{"
)


async def trickling_upload(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A /v1/files upload that sends its headers and its file part's start of a 1 MB body; the
    rest trickles in."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n"
    )
    writer.write(head.encode() + FILE_PART)
    await writer.drain()
    return reader, writer


async def trickle(
    uploads: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], stop: asyncio.Event
) -> None:
    """A byte a second on every upload still open, as the slow clients did."""
    while not stop.is_set():
        for _, writer in uploads:
            if not writer.is_closing():
                with contextlib.suppress(OSError):
                    writer.write(b" ")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def limit_of(pid: int) -> int:
    """The app process's open-files limit, as the kernel holds it."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files limit")


async def test_600_slow_uploads_under_1024_descriptors_leave_health_and_intake_answering(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = app_env(
        sqlite_url,
        "http://127.0.0.1:9",
        tmp_path,
        SCHEDULER_ENABLED="false",
    )
    wrapper = ("prlimit", f"--nofile={DESCRIPTORS}:{DESCRIPTORS}")
    async with app_process(env, wrapper=wrapper) as (process, url):
        assert limit_of(process.pid) == DESCRIPTORS  # prlimit execs the app in its own place
        port = int(url.rsplit(":", 1)[1])
        uploads = [await trickling_upload(port) for _ in range(UPLOADS)]
        stop = asyncio.Event()
        trickling = asyncio.create_task(trickle(uploads, stop))
        try:
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                # Five seconds of slow uploads: health and intake answer every time, each on a
                # new connection (what the exhausted server could no longer accept).
                loop = asyncio.get_running_loop()
                until, n = loop.time() + 5, 0
                while loop.time() < until:
                    n += 1
                    headers = {"connection": "close"}
                    assert (await client.get("/health", headers=headers)).status_code == 200
                    payload = request_payload(f"meanwhile-{n}", NO_DELIVERY)
                    answer = await client.post("/api/requests", json=payload, headers=headers)
                    assert answer.status_code == 202
            refused = 0
            for reader, _ in uploads:
                with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    head = await asyncio.wait_for(reader.read(64), 0.05)
                    refused += head.startswith(b"HTTP/1.1 429")
            assert refused >= UPLOADS - 64  # all but UPLOADS_MAX were turned away at once
        finally:
            stop.set()
            await trickling
            for _, writer in uploads:
                writer.close()
