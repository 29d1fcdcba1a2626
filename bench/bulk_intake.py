"""Bulk intake (POST /api/requests/bulk) from another process, against the database's own bulk
write of the same rows, in one run.

    .venv/bin/python -m bench.bulk_intake [--db sqlite|postgres] [--rounds 3] [--items 50000]
        [--forms json,jsonl] [--profile FILE] [--record]

The app runs as `python -m app serve` (SERVE_ROLE=api, SCHEDULER_ENABLED=false: only intake) on
a fresh migrated database; this process is the client (httpx, one connection), posting bodies of
`--items` requests built beforehand, as a JSON array and as JSONL. The limit writes the same rows
into the same table: asyncpg's copy_records_to_table (PostgreSQL), or the standard library's
sqlite3 executemany in one transaction with the app's pragmas (SQLite). The requests table is
emptied before every measurement, and the order of the measurements rotates from round to round.
A rate counts the whole exchange: sending the body, the app's work, reading the answer. A run
whose answer does not accept every item, or leaves fewer rows than it accepted, is invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from app.core.intake import insert_sql
from app.core.runs.lines import input_line
from app.ground.clock import utcnow
from bench import pyspy, summary
from bench.common import fresh_database
from bench.http_intake import child_env, load_average, record, run_options, start_run, usage
from testkit.builders import client_request
from testkit.processes import app_process

# The raw baseline stores the same columns as the gateway.
ROW_COLUMNS = insert_sql.COLUMNS
CONTENT_TYPES = {"json": "application/json", "jsonl": "application/x-ndjson"}
WEBHOOK = "http://127.0.0.1:9/hook"  # never called: the scheduler is off


def items(prefix: str, count: int) -> list[dict[str, Any]]:
    return [client_request(f"{prefix}{i}", WEBHOOK) for i in range(count)]


def body(form: str, requests: list[dict[str, Any]]) -> bytes:
    if form == "json":
        return msgspec.json.encode(requests)
    return b"".join(msgspec.json.encode(r) + b"\n" for r in requests)


def raw_rows(requests: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rows intake stores for `requests`, as the raw writes take them (JSON as text)."""
    now = utcnow()
    return [
        (
            "",  # scope: an admin's
            "",  # owner
            r["custom_id"],
            "api",
            "local",
            r["url"],
            r["body"]["model"],
            json.dumps(r["body"]),
            len(input_line(r["custom_id"], r["url"], r["body"])),
            json.dumps(r["delivery_config"]),
            None,  # complete_by
            "pending",
            0,
            0,
            now,
        )
        for r in requests
    ]


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1]


async def empty(url: str) -> None:
    """Remove every request, so each measurement writes into the same empty table."""
    if url.startswith("sqlite"):
        await asyncio.to_thread(_sqlite_empty, _sqlite_path(url))
        return
    connection = await asyncpg.connect(_pg_dsn(url))
    try:
        await connection.execute("TRUNCATE requests CASCADE")
    finally:
        await connection.close()


def _sqlite_empty(path: str) -> None:
    with sqlite3.connect(path, timeout=30) as connection:
        connection.execute("DELETE FROM requests")


async def raw_write(url: str, rows: list[tuple[Any, ...]]) -> float:
    """Seconds the database's own bulk write of `rows` takes, committed."""
    if url.startswith("sqlite"):
        return await asyncio.to_thread(_sqlite_write, _sqlite_path(url), rows)
    connection = await asyncpg.connect(_pg_dsn(url))
    try:
        start = time.perf_counter()
        await connection.copy_records_to_table("requests", records=rows, columns=ROW_COLUMNS)
        return time.perf_counter() - start
    finally:
        await connection.close()


def _sqlite_write(path: str, rows: list[tuple[Any, ...]]) -> float:
    connection = sqlite3.connect(path, timeout=30)
    try:
        # The app's pragmas (app.db.session): WAL, and every commit synced (SQLITE_SYNCHRONOUS=full).
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        marks = ",".join("?" * len(ROW_COLUMNS))
        statement = f"INSERT INTO requests ({','.join(ROW_COLUMNS)}) VALUES ({marks})"
        stamp = rows[0][-1].strftime("%Y-%m-%d %H:%M:%S.%f")
        start = time.perf_counter()
        with connection:  # one transaction, committed
            connection.executemany(statement, [(*r[:-1], stamp) for r in rows])
        return time.perf_counter() - start
    finally:
        connection.close()


async def post(client: httpx.AsyncClient, form: str, content: bytes, count: int) -> tuple[float, str | None]:
    """Seconds one bulk POST takes (sent, answered, read), and why it is invalid if it is."""
    start = time.perf_counter()
    answer = await client.post(
        "/api/requests/bulk", content=content, headers={"content-type": CONTENT_TYPES[form]}
    )
    elapsed = time.perf_counter() - start
    if answer.status_code != 200:
        return elapsed, f"answered {answer.status_code}: {answer.text[:200]}"
    accepted = answer.json()["accepted"]
    return elapsed, None if accepted == count else f"accepted {accepted} of {count}"


async def stored(url: str) -> int:
    if url.startswith("sqlite"):
        with sqlite3.connect(_sqlite_path(url)) as connection:
            return int(connection.execute("SELECT count(*) FROM requests").fetchone()[0])
    connection = await asyncpg.connect(_pg_dsn(url))
    try:
        return int(await connection.fetchval("SELECT count(*) FROM requests"))
    finally:
        await connection.close()


Measure = Callable[[int], Awaitable[tuple[float, str | None]]]


async def measure_round(
    url: str, args: argparse.Namespace, client: httpx.AsyncClient, pid: int, r: int
) -> dict[str, tuple[float, str | None, float]]:
    """One round: each app form and the raw write, in an order rotating with `r`; per name,
    (items per second, why invalid or None, app CPU ms per 1,000 items)."""
    names = [*args.forms, "raw"]
    names = names[r % len(names) :] + names[: r % len(names)]
    out = {}
    for name in names:
        await empty(url)
        requests = items(f"r{r}{name}-", args.items)
        if name == "raw":
            rows = raw_rows(requests)
            seconds, problem, cpu = await raw_write(url, rows), None, 0.0
        else:
            content = body(name, requests)
            before = usage(pid)
            seconds, problem = await post(client, name, content, args.items)
            user, system, _ = (b - a for a, b in zip(before, usage(pid), strict=True))
            cpu = (user + system) * 1e6 / args.items
        if problem is None and (rows_left := await stored(url)) < args.items:
            problem = f"{rows_left} rows stored for {args.items}"
        out[name] = (args.items / seconds, problem, cpu)
    return out


async def run(
    args: argparse.Namespace,
) -> tuple[list[dict[str, tuple[float, str | None, float]]], str | None]:
    rounds = []
    summary = None
    async with fresh_database(args.db) as url:
        with tempfile.TemporaryDirectory(prefix="bg_bench_data_") as data_dir:
            env = child_env(url, data_dir, "default", args.log_level)
            async with (
                app_process(env) as (app, base),
                httpx.AsyncClient(base_url=base, timeout=600) as client,
            ):
                # Warm up: the first bodies pay for imports, caches and the database's first pages.
                for form in args.forms:
                    await post(client, form, body(form, items(f"warm-{form}-", 1000)), 1000)
                for r in range(args.rounds):
                    rounds.append(await measure_round(url, args, client, app.pid, r))
                    print(
                        f"round {r + 1}/{args.rounds}: "
                        + ", ".join(_cell(n, m) for n, m in rounds[-1].items()),
                        flush=True,
                    )
                if args.profile:
                    summary = await profile(url, args, client, app.pid)
    return rounds, summary


async def profile(url: str, args: argparse.Namespace, client: httpx.AsyncClient, pid: int) -> str:
    """Extra, unmeasured posts of the first form with py-spy attached: where the app's time goes."""
    out, seconds = Path(args.profile), 8.0
    spy = asyncio.create_task(pyspy.record(pid, seconds, out))
    await asyncio.sleep(1)  # let py-spy attach first
    deadline, n = time.monotonic() + seconds - 1, 0
    while time.monotonic() < deadline:
        await empty(url)
        await post(client, args.forms[0], body(args.forms[0], items(f"p{n}-", args.items)), args.items)
        n += 1
    await spy
    return f"app, {args.forms[0]} bodies, raw stacks in {out}\n" + pyspy.summarize(out, seconds)


def _cell(name: str, m: tuple[float, str | None, float]) -> str:
    return f"{name} INVALID ({m[1]})" if m[1] else f"{name} {m[0]:,.0f}/s"


def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    middle = format(statistics.median(values), fmt)
    return middle if len(values) == 1 else f"{middle} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def report(rounds: list[dict[str, tuple[float, str | None, float]]], args: argparse.Namespace) -> None:
    """Per form, its outcomes against both goals: the rate, and the ratio to the raw write."""
    raw_name = "raw COPY" if args.db == "postgres" else "raw executemany"
    for form in args.forms:
        valid = [(row[form][0], row["raw"][0]) for row in rounds if not row[form][1] and not row["raw"][1]]
        if not valid:
            continue
        app, raw = [a for a, _ in valid], [r for _, r in valid]
        path = f"Bulk intake, {args.items:,} items as {form.upper()} ({args.db})"
        measured = f"app {summary.rates(app)} vs {raw_name} {summary.rates(raw)}"
        # Issue 30: 0.7 of COPY on PostgreSQL; SQLite's executemany keeps 0.5.
        ratio_goal = 0.7 if args.db == "postgres" else 0.5
        summary.report(summary.Outcome(path, measured, summary.ratios(app, raw), goal=ratio_goal))
        summary.report(summary.Outcome(path + ": rate", measured, app, goal=50_000, unit="req/s"))


def table(rounds: list[dict[str, tuple[float, str | None, float]]], args: argparse.Namespace) -> str:
    """Per target its rate per round, median and range; per form app / raw per round."""
    limit = "asyncpg copy_records_to_table" if args.db == "postgres" else "sqlite3 executemany, 1 transaction"
    lines = [
        f"bench.bulk_intake  db={args.db}  items={args.items}  rounds={args.rounds}  raw = {limit}",
        f"  {'target':<22} {'requests/s per round':<32} {'median (range)':<28} app CPU us/item",
    ]
    for name in [*args.forms, "raw"]:
        runs = [row[name] for row in rounds]
        valid = [m for m in runs if m[1] is None]
        per_round = ", ".join("INVALID" if m[1] else f"{m[0]:,.0f}" for m in runs)
        cpu = _spread([m[2] for m in valid], ".1f") if name != "raw" else ""
        label = f"app {name}" if name != "raw" else "raw"
        lines.append(
            f"  {label:<22} {per_round:<32} {_spread([m[0] for m in valid], ',.0f'):<28} {cpu}".rstrip()
        )
    for form in args.forms:
        ratios = [None if row[form][1] or row["raw"][1] else row[form][0] / row["raw"][0] for row in rounds]
        per_round = ", ".join("INVALID" if x is None else f"{x:.2f}" for x in ratios)
        valid_ratios = [x for x in ratios if x is not None]
        lines.append(f"  {'app ' + form + ' / raw':<22} {per_round:<32} {_spread(valid_ratios, '.2f')}")
    invalid = [(name, m[1]) for row in rounds for name, m in row.items() if m[1]]
    lines += [f"  invalid: {name}: {why}" for name, why in invalid]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk_intake", description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=50_000, help="requests per body (and per raw write)")
    parser.add_argument("--forms", default="json,jsonl", help="comma list of json, jsonl")
    run_options(parser)
    args = parser.parse_args()
    args.forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    if unknown := [f for f in args.forms if f not in CONTENT_TYPES]:
        parser.error(f"unknown --forms {unknown}; choose from json, jsonl")
    return args


async def main(args: argparse.Namespace) -> None:
    before = start_run()
    rounds, profiled = await run(args)
    load_after = load_average()
    text = table(rounds, args) + (f"\n{profiled}" if profiled else "")
    print(text)
    report(rounds, args)
    if args.record:
        command = ".venv/bin/python -m bench.bulk_intake " + shlex.join(sys.argv[1:])
        record(command, before, load_after, text, name="bench.bulk_intake")
        print("recorded in docs/benchmark-history.md")


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args()))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM: cleaned up on the way out
        sys.exit("bench.bulk_intake: interrupted; app stopped, database removed")
