"""The raw durable limits of bench.rabbitmq and bench.openai_backend, each in a process of its
own as the gateway is: the simplest correct way to do the same work with the same database.

    .venv/bin/python -m bench.raw_durable intake DATABASE_URL QUEUE N PREFETCH
    .venv/bin/python -m bench.raw_durable outbox DATABASE_URL N CHUNK
    .venv/bin/python -m bench.raw_durable upload DATABASE_URL BASE_URL
    .venv/bin/python -m bench.raw_durable collect DATABASE_URL BASE_URL FILE_ID
    .venv/bin/python -m bench.raw_durable create DATABASE_URL FILE

intake: consume QUEUE with PREFETCH unacked, INSERT every message that arrived meanwhile in one
transaction (group commit), then ack them all (multiple) after the commit. outbox: claim CHUNK
pending deliveries (FOR UPDATE SKIP LOCKED on PostgreSQL), publish them all at once (persistent,
mandatory, confirmed), mark them delivered and commit, until N are. upload: read the requests'
bodies, build the JSONL and upload it (multipart). collect: stream the output file and UPDATE
the requests still processing with their results (matched on id), executemany, 1,000 lines a transaction.
create (the OpenAI face's batch create): read the JSONL FILE once, decode each line, and
executemany the requests rows the gateway writes for it (same columns, a batch row first),
1,000 rows a statement, all in ONE transaction: the gateway creates a batch whole or not at all.
SQLite only, through the standard library's sqlite3 with the app's pragmas (WAL, synchronous,
foreign keys).
Each prints the seconds of its work (a JSON object) on its last line.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from typing import Any

import aio_pika
import httpx
import msgspec
from sqlalchemy import bindparam, func, insert, select, update

from app.db.models import Delivery, Request
from app.ground.clock import utcnow
from bench.common import child_output, raw_database, request_row
from testkit import RABBITMQ_URL, fast_settings

LINES_PER_TRANSACTION = 1000


async def intake(url: str, queue: str, n: int, prefetch: int) -> dict[str, float]:
    db = raw_database(url)
    stmt = insert(Request)
    arrived: list[aio_pika.abc.AbstractIncomingMessage] = []
    waiting = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived.append(message)
        waiting.set()

    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        declared = await channel.declare_queue(queue, passive=True)
        await declared.consume(on_message)
        stored, start = 0, 0.0
        while stored < n:
            await waiting.wait()
            waiting.clear()
            start = start or time.perf_counter()
            messages = arrived[:]
            del arrived[:]
            rows = [request_row(json.loads(m.body)) for m in messages]
            async with db.engine.begin() as conn:
                await conn.execute(stmt, rows)
            # One channel delivers in order: acking the last acks every one before it.
            await messages[-1].ack(multiple=True)
            stored += len(messages)
        return {"seconds": time.perf_counter() - start}
    finally:
        await connection.close()
        await db.dispose()


async def outbox(url: str, n: int, chunk: int) -> dict[str, float]:
    db = raw_database(url)
    claim = (
        select(Delivery.id, Delivery.target, Request.id, Request.custom_id, Request.response, Request.error)
        .join(Request, Request.id == Delivery.request_id)
        .where(Delivery.status == "pending")
        .order_by(Delivery.id)
        .limit(chunk)
    )
    if db.engine.dialect.name == "postgresql":
        claim = claim.with_for_update(skip_locked=True, of=Delivery)
    mark = (
        update(Delivery)
        .where(Delivery.id == bindparam("b_id"))
        .values(status="delivered", attempts=1, total_attempts=1, delivered_at=bindparam("b_at"))
    )
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)

        async def publish(row: Any) -> None:
            body = {"id": f"batch_req_{row[2]}", "custom_id": row[3], "response": row[4], "error": row[5]}
            message = aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=f"dlv_{row[0]}",
                headers={"x-batchgate-custom-id": row[3], "x-batchgate-attempt": 1},
            )
            await channel.default_exchange.publish(message, row[1]["rabbitmq_queue"], mandatory=True)

        sent, start = 0, time.perf_counter()
        while sent < n:
            async with db.engine.begin() as conn:
                rows = (await conn.execute(claim)).all()
                if not rows:
                    raise RuntimeError(f"only {sent} of {n} deliveries were pending")
                await asyncio.gather(*(publish(row) for row in rows))
                now = utcnow()
                await conn.execute(mark, [{"b_id": row[0], "b_at": now} for row in rows])
            sent += len(rows)
        return {"seconds": time.perf_counter() - start}
    finally:
        await connection.close()
        await db.dispose()


async def upload(url: str, base_url: str) -> dict[str, float]:
    db = raw_database(url)
    query = select(Request.custom_id, Request.endpoint, Request.body).order_by(Request.id)
    try:
        start = time.perf_counter()
        async with db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        data = b"".join(
            json.dumps({"custom_id": c, "method": "POST", "url": e, "body": b}).encode() + b"\n"
            for c, e, b in rows
        )
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
            answer = await client.post(
                "/files", files={"file": ("raw.jsonl", data, "application/jsonl")}, data={"purpose": "batch"}
            )
            answer.raise_for_status()
        return {"seconds": time.perf_counter() - start, "lines": len(rows), "bytes": len(data)}
    finally:
        await db.dispose()


async def collect(url: str, base_url: str, file_id: str) -> dict[str, float]:
    db = raw_database(url)
    store = (
        update(Request)
        .where(Request.id == bindparam("b_id"), Request.status == "processing")
        .values(
            status=bindparam("b_status"),
            response=bindparam("b_response"),
            error=bindparam("b_error"),
            completed_at=bindparam("b_at"),
        )
    )

    async def write(lines: list[str], ids: dict[str, int]) -> int:
        now, rows = utcnow(), []
        for raw in lines:
            line = json.loads(raw)
            ok = line.get("error") is None and (line.get("response") or {}).get("status_code") == 200
            rows.append(
                {
                    "b_id": ids[line["custom_id"]],
                    "b_status": "succeeded" if ok else "failed",
                    "b_response": line.get("response"),
                    "b_error": line.get("error"),
                    "b_at": now,
                }
            )
        async with db.engine.begin() as conn:
            await conn.execute(store, rows)
        return len(rows)

    try:
        start, stored = time.perf_counter(), 0
        # Matched on id: on SQLite, `custom_id = ? AND status = ?` chose the status index and
        # read every processing row for each line.
        async with db.engine.connect() as conn:
            found = await conn.execute(
                select(Request.custom_id, Request.id).where(Request.status == "processing")
            )
            ids = {custom_id: request_id for custom_id, request_id in found}
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=120) as client,
            client.stream("GET", f"/files/{file_id}/content") as response,
        ):
            chunk: list[str] = []
            async for line in response.aiter_lines():
                if line:
                    chunk.append(line)
                if len(chunk) >= LINES_PER_TRANSACTION:
                    stored += await write(chunk, ids)
                    chunk = []
            if chunk:
                stored += await write(chunk, ids)
        seconds = time.perf_counter() - start
        # What landed, counted apart (asyncpg reports no rowcount for an executemany).
        async with db.engine.connect() as conn:
            left = await conn.scalar(select(func.count()).where(Request.status == "processing"))
        return {"seconds": seconds, "stored": stored - int(left or 0)}
    finally:
        await db.dispose()


CREATE_COLUMNS = (
    "scope", "owner", "custom_id", "origin", "backend", "endpoint", "model", "body", "body_bytes",
    "delivery", "status", "batch_id", "inference_attempts", "resubmits", "created_at",
)  # fmt: skip
BATCH_COLUMNS = (
    "backend", "endpoint", "model", "origin", "status", "request_count", "bytes", "completed_count",
    "failed_count", "close_requested", "run_failures", "created_at", "status_changed_at",
)  # fmt: skip


def create(url: str, path: str) -> dict[str, float]:
    """The batch create's limit: FILE's lines as requests rows of one batch, one transaction."""
    connection = sqlite3.connect(url.split(":///", 1)[1], timeout=30)
    try:
        # The app's pragmas (app.db.session._sqlite_pragmas) and its SQLITE_SYNCHRONOUS.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={fast_settings(url).sqlite_synchronous.upper()}")
        connection.execute("PRAGMA foreign_keys=ON")
        decode, encode = msgspec.json.Decoder().decode, msgspec.json.Encoder().encode
        rows_sql = f"INSERT INTO requests ({','.join(CREATE_COLUMNS)}) VALUES ({','.join('?' * 15)})"
        batch_sql = f"INSERT INTO batches ({','.join(BATCH_COLUMNS)}) VALUES ({','.join('?' * 13)})"
        stamp = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")
        start, count = time.perf_counter(), 0
        with connection, open(path, "rb") as lines:  # one transaction, committed at the end
            batch = ("local", "/v1/chat/completions", "stand-in", "openai_batch", "ready", 0, 0, 0, 0, 0, 0)
            batch_id = connection.execute(batch_sql, (*batch, stamp, stamp)).lastrowid
            scope, rows = f"raw_{batch_id}", []
            for raw in lines:
                if not raw.strip():
                    continue
                line = decode(raw)
                body = line["body"]
                head = (scope, "", line["custom_id"], "openai_batch", "local", line["url"], body["model"])
                tail = (len(raw), '{"type":"none"}', "batched", batch_id, 0, 0, stamp)
                rows.append((*head, encode(body).decode(), *tail))
                if len(rows) == LINES_PER_TRANSACTION:
                    connection.executemany(rows_sql, rows)
                    count, rows = count + len(rows), []
            connection.executemany(rows_sql, rows)
            count += len(rows)
        return {"seconds": time.perf_counter() - start, "stored": count}
    finally:
        connection.close()


async def run(*args: str, timeout: float = 600) -> dict[str, float]:  # noqa: ASYNC109
    """Run this module as a child process with `args`; what it printed (its seconds, ...)."""
    result: dict[str, float] = json.loads(await child_output("bench.raw_durable", *args, timeout=timeout))
    return result


def main(argv: list[str]) -> dict[str, float]:
    kind, url, *rest = argv
    if kind == "intake":
        return asyncio.run(intake(url, rest[0], int(rest[1]), int(rest[2])))
    if kind == "outbox":
        return asyncio.run(outbox(url, int(rest[0]), int(rest[1])))
    if kind == "upload":
        return asyncio.run(upload(url, rest[0]))
    if kind == "collect":
        return asyncio.run(collect(url, rest[0], rest[1]))
    if kind == "create":
        return create(url, rest[0])
    raise SystemExit(f"unknown limit {kind!r}: intake, outbox, upload, collect or create")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
