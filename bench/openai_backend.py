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
gateway has stopped: httpx in this process uploads the very bytes the gateway uploaded
(multipart, as the gateway does) to the same stand-in and downloads the output file the
stand-in wrote for it, streaming both.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import datetime

import httpx
from sqlalchemy import text

from app.db.session import Database
from bench import summary
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


async def gateway(kind: str, n: int, url: str, seconds: float) -> tuple[float, float]:
    """(upload, collect) seconds of the gateway's batch."""
    async with fresh_database(kind) as database_url:
        with tempfile.TemporaryDirectory(prefix="bg_bench_data_") as data_dir:
            env = app_env(
                database_url, "http://127.0.0.1:9", data_dir,
                OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=url + "/v1", OPENAI_POLL_SECONDS="0.2",
                OPENAI_DELETE_FILES="false", OPENAI_TOKEN_LIMITS='{"gpt-4o-mini": 1000000000000}',
                BATCH_MAX_REQUESTS=str(n), OPENAI_BATCH_MAX_AGE_SECONDS="600", LEASE_SECONDS="600",
            )  # fmt: skip
            async with (
                app_process(env) as (_, app_url),
                httpx.AsyncClient(base_url=app_url, timeout=120) as client,
            ):
                for first in range(0, n, CHUNK):
                    answer = await client.post(
                        "/api/requests/bulk", json=[body(i) for i in range(first, min(first + CHUNK, n))]
                    )
                    if answer.status_code != 200 or answer.json()["rejected"]:
                        raise RuntimeError(f"bulk submit: {answer.status_code} {answer.text[:300]}")
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


async def raw(standin: OpenAIBatchStandin, url: str) -> tuple[float, float, int, int]:
    """(upload, download seconds, bytes up, bytes down): the gateway's input file streamed up as a
    multipart upload and its output file streamed down, by httpx."""
    input_id, output_id = next((b["input_file_id"], b["output_file_id"]) for b in standin.batches.values())
    data, output = standin.files[input_id], standin.files[output_id]
    async with httpx.AsyncClient(base_url=url + "/v1", timeout=120) as client:
        started = time.perf_counter()
        answer = await client.post(
            "/files", files={"file": ("raw.jsonl", data, "application/jsonl")}, data={"purpose": "batch"}
        )
        answer.raise_for_status()
        upload = time.perf_counter() - started
        started = time.perf_counter()
        size = 0
        async with client.stream("GET", f"/files/{output_id}/content") as response:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
        download = time.perf_counter() - started
    assert size == len(output)
    return upload, download, len(data), size


async def main(args: argparse.Namespace) -> None:
    gateway_s: list[float] = []
    raw_s: list[float] = []
    for r in range(args.rounds):
        standin = OpenAIBatchStandin()
        standin.polls_per_status = 0
        async with serve(standin) as url:
            upload, collect = await gateway(args.db, args.requests, url, args.timeout)
            up, down, size_up, size_down = await raw(standin, url)
        gateway_s.append(upload + collect)
        raw_s.append(up + down)
        print(
            f"round {r + 1}/{args.rounds}: gateway upload {upload:.2f} s + collect {collect:.2f} s; "
            f"httpx up {up:.2f} s ({size_up / 1e6:.1f} MB) + down {down:.2f} s ({size_down / 1e6:.1f} MB)",
            flush=True,
        )
    print(f"bench.openai_backend  db={args.db}  requests={args.requests}  rounds={args.rounds}")
    summary.report(
        summary.Outcome(
            path=f"OpenAI backend: {args.requests:,}-line batch uploaded and collected ({args.db})",
            measured=f"gateway {summary.rates([args.requests / s for s in gateway_s], 'lines/s')} "
            f"vs httpx streaming {summary.rates([args.requests / s for s in raw_s], 'lines/s')}",
            figures=[r / g for r, g in zip(raw_s, gateway_s, strict=True)],
            goal=0.7,
        )
    )


def parse_args() -> argparse.Namespace:
    return options("bench.openai_backend", __doc__, requests=50_000, rounds=2).parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
