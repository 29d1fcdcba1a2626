"""Slow uploads cannot use the server up (issue 29): 600 uploads sending a byte a second held
every connection. A body that stalls is answered 408 and its connection closed after
BODY_IDLE_SECONDS; uploads past UPLOADS_MAX / UPLOADS_PER_KEY are refused 429 at once; /health
and intake answer meanwhile."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from testkit import RunningApp, StartApp, fast_settings, wait_until

KINDS = {
    "/v1/files": ("multipart/form-data; boundary=b", "-"),
    "/api/requests/bulk": ("application/json", "["),
    "/v1/messages/batches": ("application/json", "{"),
}


async def stalled_upload(
    app: RunningApp, path: str = "/v1/files"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An upload that sends its headers and the first byte of a large body, then nothing."""
    url = urlsplit(app.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    content_type, first = KINDS[path]
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: 1000000\r\n\r\n{first}"
    )
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def answer_of(reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:  # noqa: ASYNC109
    """The status and the whole answer (head and body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return int(head.split(b" ", 2)[1]), head + body


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (no more bytes, end of stream)."""
    return await asyncio.wait_for(reader.read(), 10) == b""


async def test_stalled_uploads_are_timed_out_and_too_many_are_refused(
    sqlite_url: str, start_app: StartApp
) -> None:
    settings = fast_settings(
        sqlite_url, scheduler_enabled=False, body_idle_seconds=1.5, uploads_max=3, uploads_per_key=2
    )
    async with start_app(settings) as app:
        stalled = [await stalled_upload(app), await stalled_upload(app, "/api/requests/bulk")]

        async def both_counted() -> bool:
            third = await stalled_upload(app, "/v1/messages/batches")
            status, data = await answer_of(third[0], timeout=5)
            third[1].close()
            return status == 429 and b"retry-after: 5" in data.lower() and b"too_many_uploads" in data

        # A third upload of the same caller is refused at once, before its body is read.
        await wait_until(both_counted, timeout=5, what="a third upload refused")
        # Other work goes on meanwhile.
        assert (await app.client.get("/health")).status_code == 200
        assert (await app.submit("meanwhile", None)).status_code == 202

        # The stalled ones are answered 408 and their connections closed.
        for reader, writer in stalled:
            status, data = await answer_of(reader, timeout=10)
            assert status == 408 and b"body_timeout" in data, data
            assert b"connection: close" in data.lower() and await closed(reader)
            writer.close()

        # Their slots are free again: an upload is read (and refused only for what it is).
        answer = await app.client.post(
            "/v1/files", files={"file": ("x.jsonl", b"{}\n")}, data={"purpose": "batch"}
        )
        assert answer.status_code in (200, 400), answer.text


async def test_a_slow_small_body_is_timed_out_too(sqlite_url: str, start_app: StartApp) -> None:
    settings = fast_settings(sqlite_url, scheduler_enabled=False, body_idle_seconds=1.0)
    async with start_app(settings) as app:
        url = urlsplit(app.url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(
            f"POST /api/requests HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{".encode()
        )
        await writer.drain()
        status, _ = await answer_of(reader, timeout=10)
        assert status == 408 and await closed(reader)
        writer.close()
