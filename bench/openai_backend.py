"""The OpenAI backend: a 50,000-line batch uploaded and its results collected, against streaming
the same bytes up and down with httpx.

    .venv/bin/python -m bench.openai_backend [--db sqlite|postgres] [--requests 50000] [--rounds 2]

Gateway: `batchgate serve` in its own process, its OpenAI backend pointed at the OpenAI batch
stand-in served in this process (which finishes a batch on its first poll). N requests for the
openai backend (delivery `none`) arrive by bulk intake and form one batch (it closes when it
holds all N: BATCH_MAX_REQUESTS=N, and an age limit long enough not to close it sooner). The
batch's events give the two phases measured: upload (submitting until processing: the JSONL
built from the database, uploaded and the batch created) and collect (collecting until done:
the output file downloaded and every result recorded). Limit, in the same round, once the
gateway has stopped, with the same database and stand-in, in a process of its own
(bench.raw_durable): upload reads the requests' bodies, builds the JSONL and uploads it
(multipart, as the gateway does); collect (the requests set back to processing first) streams
the output file the stand-in wrote for the gateway and UPDATEs every request with its result,
executemany, 1,000 lines a transaction. Each phase is reported against its own limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import text

from app.db.session import Database
from bench import pyspy, raw_durable, summary
from bench.common import fresh_database, options, raw_database
from testkit import NO_DELIVERY, chat, request_payload, wait_until
from testkit.processes import app_env, app_process
from testkit.standins.openai_batch import OpenAIBatchStandin
from testkit.standins.serve import serve

CHUNK = 5000
MODEL = "gpt-4o-mini"


def body(i: int) -> dict[str, object]:
    item = request_payload(f"oa-{i}", NO_DELIVERY, messages=chat(f"say hi to {i}"))
    item["body"]["model"] = MODEL  # type: ignore[index]
    return {**item, "backend": "openai"}


async def phases(db: Database) -> tuple[str, float, float] | None:
    """(status, upload seconds, collect seconds) of the batch that ran, once it has ended: upload
    from its first `submitting` to its first `processing`, collect from its first `collecting` to
    `done` (events of other batches, such as an empty one opened meanwhile, left out)."""
    query = text(
        "SELECT to_status, at FROM batch_events WHERE batch_id ="
        " (SELECT batch_id FROM batch_events WHERE to_status = 'submitting' ORDER BY id LIMIT 1)"
        " ORDER BY id"
    )
    async with db.engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    at: dict[str, datetime] = {}
    for status, when in rows:
        at.setdefault(status, when if isinstance(when, datetime) else datetime.fromisoformat(str(when)))
    ended = [s for s in ("done", "failed", "expired", "cancelled") if s in at]
    if not ended:
        return None
    if ended[0] != "done":
        return (ended[0], 0.0, 0.0)
    upload = (at["processing"] - at["submitting"]).total_seconds()
    return "done", upload, (at["done"] - at["collecting"]).total_seconds()


async def gateway(
    database_url: str, n: int, url: str, seconds: float, profile: str | None = None
) -> tuple[float, float]:
    """(upload, collect) seconds of the gateway's batch."""
    with tempfile.TemporaryDirectory(prefix="bg_bench_data_") as data_dir:
        env = app_env(
            database_url, "http://127.0.0.1:9", data_dir,
            OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=url + "/v1", OPENAI_POLL_SECONDS="0.2",
            OPENAI_DELETE_FILES="false", OPENAI_TOKEN_LIMITS='{"gpt-4o-mini": 1000000000000}',
            BATCH_MAX_REQUESTS=str(n), OPENAI_BATCH_MAX_AGE_SECONDS="600", LEASE_SECONDS="600",
        )  # fmt: skip
        async with (
            app_process(env) as (process, app_url),
            httpx.AsyncClient(base_url=app_url, timeout=120) as client,
            contextlib.AsyncExitStack() as stack,
        ):
            for first in range(0, n, CHUNK):
                answer = await client.post(
                    "/api/requests/bulk", json=[body(i) for i in range(first, min(first + CHUNK, n))]
                )
                if answer.status_code != 200 or answer.json()["rejected"]:
                    raise RuntimeError(f"bulk submit: {answer.status_code} {answer.text[:300]}")
            if profile:
                await stack.enter_async_context(pyspy.recording(process.pid, Path(profile)))
            db = raw_database(database_url)
            found = None

            async def ended() -> bool:
                nonlocal found
                found = await phases(db)
                return found is not None

            try:
                await wait_until(ended, timeout=seconds, interval=0.1, what="the batch to end")
            finally:
                await db.dispose()
    assert found is not None
    status, upload, collect = found
    if status != "done":
        raise RuntimeError(f"the batch ended {status}")
    return upload, collect


async def raw(standin: OpenAIBatchStandin, database_url: str, url: str, n: int) -> tuple[float, float]:
    """(upload, collect) seconds of the raw durable work on the gateway's database, in its own process."""
    output_id = next(b["output_file_id"] for b in standin.batches.values())
    up = await raw_durable.run("upload", database_url, url + "/v1")
    if up["lines"] != n:
        raise RuntimeError(f"raw upload read {up['lines']} of {n} requests")
    db = raw_database(database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                text("UPDATE requests SET status = 'processing', response = NULL, completed_at = NULL")
            )
    finally:
        await db.dispose()
    down = await raw_durable.run("collect", database_url, url + "/v1", output_id)
    if down["stored"] != n:
        raise RuntimeError(f"raw collect stored {down['stored']} of {n} results")
    return up["seconds"], down["seconds"]


async def main(args: argparse.Namespace) -> None:
    gateway_s: dict[str, list[float]] = {"upload": [], "collect": []}
    raw_s: dict[str, list[float]] = {"upload": [], "collect": []}
    for r in range(args.rounds):
        standin = OpenAIBatchStandin()
        standin.polls_per_status = 0
        async with serve(standin) as url, fresh_database(args.db) as database_url:
            upload, collect = await gateway(database_url, args.requests, url, args.timeout, args.profile)
            up, down = await raw(standin, database_url, url, args.requests)
        gateway_s["upload"].append(upload)
        gateway_s["collect"].append(collect)
        raw_s["upload"].append(up)
        raw_s["collect"].append(down)
        print(
            f"round {r + 1}/{args.rounds}: gateway upload {upload:.2f} s, collect {collect:.2f} s; "
            f"raw upload {up:.2f} s, collect {down:.2f} s",
            flush=True,
        )
    print(f"bench.openai_backend  db={args.db}  requests={args.requests}  rounds={args.rounds}")
    limits = {
        "upload": "raw SELECT + JSONL + upload",
        "collect": "raw download + executemany UPDATE",
    }
    for phase, limit in limits.items():
        n = args.requests
        summary.report(
            summary.Outcome(
                path=f"OpenAI backend: {n:,}-line batch, {phase} ({args.db})",
                measured=f"gateway {summary.rates([n / s for s in gateway_s[phase]], 'lines/s')} "
                f"vs {limit} {summary.rates([n / s for s in raw_s[phase]], 'lines/s')}",
                figures=[r / g for r, g in zip(raw_s[phase], gateway_s[phase], strict=True)],
                goal=0.8,
            )
        )


def parse_args() -> argparse.Namespace:
    parser = options("bench.openai_backend", __doc__, requests=50_000, rounds=2)
    parser.add_argument("--profile", help="py-spy the gateway (upload and collect) into FILE")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
