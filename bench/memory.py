"""Memory: N requests end to end, and one large upload, with the server's current RSS sampled.

    .venv/bin/python -m bench.memory [--db sqlite|postgres] [--requests 100000] [--concurrency 64]
        [--upload-lines 50000] [--line-bytes 4000]

Both phases read the server's current resident memory (VmRSS in /proc/PID/status) every 50 ms from
a thread. Not its peak (VmHWM): start-up (imports, migrations) sets a peak that hides any later
growth below it, so "an upload adds 1 MB" could not see 100 MB.

End to end: `batchgate serve` in its own process (role all, LOCAL_CONCURRENCY=C, batches of at most
10,000), against an inference stand-in served in this process that answers at once. The N requests
arrive through POST /api/requests/bulk, 5,000 per call, each to be delivered to one RabbitMQ queue
(publishing is cheaper than a webhook receiver in this process, so the run stays short; both are
one delivery row, one attempt row and one send), until the queue holds N results. The highest
sample is the figure, against 400 MB. "Flat" is the second half against the first: the highest RSS
while the second half of the results were published, minus the highest before; a leak grows with
the count, a cache or a pool does not. On a PostgreSQL with autovacuum off, the run VACUUMs its
database every minute, as autovacuum would, and says so.

Upload (with --upload-lines > 0): a fresh server, idle for a second, then a JSONL file of that many
lines through POST /v1/files (multipart, as the openai SDK sends it); the highest sample during the
upload minus the highest idle one, against 100 MB: the face must stream the file to disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import httpx

from bench import summary
from bench.common import fresh_database, gateway, options, raw_database
from bench.dropin import write_file
from testkit import RABBITMQ_URL, chat, request_payload
from testkit.standins.inference import InferenceStandin
from testkit.standins.serve import serve

CHUNK = 5000
POLL_SECONDS = 0.5  # how often the queue's depth is read
MB = 1024 * 1024
VACUUM_SECONDS = 60  # autovacuum's own default naptime


def rss_mb(pid: int) -> float:
    """The process's current resident memory (VmRSS), in MB; ProcessLookupError once it has
    ended (an exited process not yet reaped has a status without VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ProcessLookupError(f"process {pid} has ended")


class RssSampler:
    """VmRSS of a process every `period` seconds, from a thread (the event loop may be busy
    building a bulk body): [(monotonic time, MB)]."""

    def __init__(self, pid: int, period: float = 0.05) -> None:
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), rss_mb(self.pid)))
            except (FileNotFoundError, ProcessLookupError):
                return  # the server has ended
            self._stop.wait(self.period)  # the sampling period, not a wait for a state

    def highest(self, start: float = 0.0, end: float = float("inf")) -> float:
        """The highest sample taken between two monotonic times."""
        return max((mb for t, mb in self.samples if start <= t <= end), default=0.0)


async def submit_all(client: httpx.AsyncClient, n: int, queue: str) -> None:
    target = {"type": "rabbitmq", "rabbitmq_queue": queue}
    for first in range(0, n, CHUNK):
        items = [
            request_payload(f"mem-{i}", target, messages=chat(f"say hi to {i}"))
            for i in range(first, min(first + CHUNK, n))
        ]
        answer = await client.post("/api/requests/bulk", json=items)
        if answer.status_code not in (200, 202):
            raise RuntimeError(f"bulk submit: {answer.status_code} {answer.text[:300]}")


async def end_to_end(
    kind: str,
    n: int,
    c: int,
    timeout: float,  # noqa: ASYNC109
) -> tuple[list[tuple[int, float]], float, int]:
    """([(results published, RSS MB)] every 50 ms, seconds, results published) of one run of N
    requests; a run that reaches `timeout` ends there, with what it sampled (fewer than N)."""
    queue = f"bg_bench_mem_{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection, fresh_database(kind) as url, serve(InferenceStandin()) as standin_url:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        try:
            async with (
                gateway(
                    url,
                    standin_url,
                    LOCAL_CONCURRENCY=str(c),
                    BATCH_MAX_REQUESTS="10000",
                    LEASE_SECONDS="60",
                    RABBITMQ_URL=RABBITMQ_URL,
                    RABBITMQ_INPUT_QUEUE="",
                    RABBITMQ_DELIVERY_QUEUES=queue,
                ) as (process, client),
                vacuuming(url),
            ):
                start = time.monotonic()
                polls: list[tuple[float, int]] = [(start, 0)]
                with RssSampler(process.pid) as sampler:
                    submitting = asyncio.create_task(submit_all(client, n, queue))
                    while polls[-1][1] < n and time.monotonic() - start <= timeout:
                        if submitting.done():
                            submitting.result()  # a failed submit ends the run now
                        if process.returncode is not None:  # not a wait for the timeout
                            raise RuntimeError(
                                f"the server exited ({process.returncode}) at {polls[-1][1]:,} results"
                            )
                        await asyncio.sleep(POLL_SECONDS)  # the polling period, not a wait for a state
                        declared = await channel.declare_queue(queue, passive=True)
                        polls.append((time.monotonic(), declared.declaration_result.message_count or 0))
                    seconds = time.monotonic() - start
                    if polls[-1][1] >= n:
                        await submitting
                    else:
                        submitting.cancel()
                return published_at(sampler.samples, polls), seconds, polls[-1][1]
        finally:
            await channel.queue_delete(queue)


@contextlib.asynccontextmanager
async def vacuuming(url: str) -> AsyncIterator[None]:
    """On a PostgreSQL whose autovacuum is off (this machine's CI configuration), VACUUM (ANALYZE)
    the run's database every VACUUM_SECONDS, as autovacuum would on a server set up as
    docs/operations.md asks. Without it, a million requests leave a million dead index entries that
    every scan of a status reads again, and the run measures the missing vacuum, not the gateway."""
    db = raw_database(url)
    if not await db.autovacuum_off():
        await db.dispose()
        yield
        return
    print(f"autovacuum is off here: the bench runs VACUUM (ANALYZE) every {VACUUM_SECONDS} s", flush=True)

    async def vacuum_forever() -> None:
        while True:
            await asyncio.sleep(VACUUM_SECONDS)  # the period autovacuum would wake at, not a wait for a state
            async with db.engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.exec_driver_sql("VACUUM (ANALYZE)")

    task = asyncio.create_task(vacuum_forever())
    try:
        yield
    finally:
        task.cancel()
        (failed,) = await asyncio.gather(task, return_exceptions=True)
        if not isinstance(failed, asyncio.CancelledError):
            print(f"the bench's VACUUM failed, and the run went on without it: {failed!r}", flush=True)
        await db.dispose()


def published_at(
    samples: list[tuple[float, float]], polls: list[tuple[float, int]]
) -> list[tuple[int, float]]:
    """Each RSS sample with the count of results published by then (the last poll before it)."""
    out: list[tuple[int, float]] = []
    p = 0
    for t, mb in samples:
        while p + 1 < len(polls) and polls[p + 1][0] <= t:
            p += 1
        out.append((polls[p][1], mb))
    return out


async def upload_growth(lines: int, line_bytes: int) -> tuple[float, float, float, float]:
    """(file MB, idle RSS MB, highest RSS during the upload MB, upload seconds) for one upload."""
    with tempfile.TemporaryDirectory(prefix="bg_bench_mem_upload_") as tmp:
        path = Path(tmp) / "input.jsonl"
        size = write_file(path, lines, line_bytes)
        async with (
            fresh_database("sqlite") as url,
            serve(InferenceStandin()) as standin_url,
            gateway(url, standin_url) as (process, client),
        ):
            with RssSampler(process.pid) as sampler:
                await asyncio.sleep(1.0)  # an idle second of samples, not a wait for a state
                start = time.monotonic()
                with path.open("rb") as data:
                    files = {"file": (path.name, data, "application/jsonl")}
                    answer = await client.post("/v1/files", data={"purpose": "batch"}, files=files)
                end = time.monotonic()
                await asyncio.sleep(0.2)  # what the server still holds just after its answer
            if answer.status_code != 200:
                raise RuntimeError(f"upload: {answer.status_code} {answer.text[:300]}")
            idle = sampler.highest(end=start)
            return size / MB, idle, sampler.highest(start, end + 0.2), end - start


def at_quarters(samples: list[tuple[int, float]], n: int) -> list[tuple[int, float]]:
    """The first sample at or past each quarter of the N results: (results published, RSS MB)."""
    return [next(((d, r) for d, r in samples if d >= n * q // 4), samples[-1]) for q in (1, 2, 3, 4)]


def second_half_growth(samples: list[tuple[int, float]], n: int) -> float:
    first = max((rss for done, rss in samples if done < n // 2), default=0.0)
    second = max((rss for done, rss in samples if done >= n // 2), default=0.0)
    return round(second - first, 1) + 0.0  # never "-0"


async def report_end_to_end(args: argparse.Namespace) -> None:
    n = args.requests
    samples, seconds, published = await end_to_end(args.db, n, args.concurrency, args.timeout)
    print(f"bench.memory  db={args.db}  requests={n:,}  concurrency={args.concurrency}  {seconds:.0f} s")
    # A run stopped by its timeout still says what its memory did, and that it stopped: its rows
    # carry that as a note, with no figure to be met.
    stopped = ""
    if published < n:
        stopped = f"stopped at the timeout, {published:,} of {n:,} results in {seconds:.0f} s"
        print(f"  NOT FINISHED, {stopped}")
    quarters = at_quarters(samples, n)
    for done, rss in quarters:
        print(f"  {done:>9,} results published: RSS {rss:.0f} MB")
    peak = max(mb for _, mb in samples)
    growth = second_half_growth(samples, n)
    print(f"  highest RSS {peak:.0f} MB ({len(samples)} samples); second half minus first {growth:+.0f} MB")
    summary.report(
        summary.Outcome(
            path=f"Memory: {n:,} requests end to end ({args.db}), peak RSS",
            measured=f"{seconds:.0f} s; RSS at each quarter of the results: "
            + ", ".join(f"{rss:.0f}" for _, rss in quarters)
            + " MB (VmRSS every 50 ms)",
            figures=[] if stopped else [peak],
            goal=400,
            unit="MB",
            at_most=True,
            note=stopped and f"{stopped}; highest RSS {peak:.0f} MB",
        )
    )
    summary.report(
        summary.Outcome(
            path=f"Memory: {n:,} requests end to end ({args.db}), growth over the second half",
            measured="highest RSS while the second half of the results was published, minus the first half's",
            figures=[] if stopped else [growth],
            goal=25,
            unit="MB",
            at_most=True,
            note=stopped and f"{stopped}; second half minus first {growth:+.0f} MB",
        )
    )


async def report_upload(args: argparse.Namespace) -> None:
    size, idle, during, seconds = await upload_growth(args.upload_lines, args.line_bytes)
    print(
        f"bench.memory upload: {size:.0f} MB in {seconds:.1f} s; RSS idle {idle:.0f} MB, "
        f"highest during the upload {during:.0f} MB"
    )
    summary.report(
        summary.Outcome(
            path=f"Memory: a {size:.0f} MB JSONL upload (/v1/files) adds",
            measured=f"server RSS (VmRSS every 50 ms) {idle:.0f} MB idle, "
            f"at most {during:.0f} MB during the upload",
            figures=[round(during - idle, 1) + 0.0],
            goal=100,
            unit="MB",
            at_most=True,
        )
    )


async def main(args: argparse.Namespace) -> None:
    if args.upload_lines > 0:
        await report_upload(args)
    if args.requests > 0:
        await report_end_to_end(args)


def parse_args() -> argparse.Namespace:
    parser = options("bench.memory", __doc__, requests=100_000, concurrency=64, rounds=1)
    parser.add_argument("--upload-lines", type=int, default=50_000, help="0 skips the upload phase")
    parser.add_argument("--line-bytes", type=int, default=4000, help="the size of one uploaded line")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
