"""HTTP intake loaded from another process (wrk), against the framework's no-op route, in one run.

    .venv/bin/python -m bench.http_intake [--db sqlite|postgres] [--rounds 3] [--duration 10]
        [--connections 64] [--server-opts default|asyncio-h11|uvloop-httptools[,...]]
        [--profile FILE] [--record]

Each server option set gets two child processes, both served by uvicorn as `batchgate serve`
serves (app.__main__.server_options, from the same environment): the app (`python -m app serve`,
SERVE_ROLE=api and SCHEDULER_ENABLED=false, so only intake runs) on a fresh migrated database,
and bench.noop_server, whose `POST /noop` decodes the same JSON and answers 202 {}. Every round
loads each server with `wrk --latency -s testkit/wrk_post.lua` (a unique custom_id per request),
in an order that rotates from round to round. A run with any non-2xx answer, socket error, or
fewer stored rows than 202 answers is reported as invalid, not as throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from bench import pyspy, summary, wrk
from bench.common import fresh_database, raw_database
from testkit.processes import app_process
from testkit.wrk import WrkResult

# What each --server-opts name sets in both children's environment ("default": what
# `batchgate serve` does without SERVER_LOOP / SERVER_HTTP set, or with the caller's own).
SERVER_OPTS: dict[str, dict[str, str]] = {
    "default": {},
    "asyncio-h11": {"SERVER_LOOP": "asyncio", "SERVER_HTTP": "h11"},
    "uvloop-httptools": {"SERVER_LOOP": "uvloop", "SERVER_HTTP": "httptools"},
}
WARM_UP_SECONDS = 2.0
# --record appends a run to the history; BENCHMARKS.md itself is rewritten by `make bench`.
BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmark-history.md"


@dataclass(frozen=True)
class Target:
    """One server under load: the app or its no-op limit, with one set of server options."""

    kind: str  # "app" or "no-op"
    opts: str
    url: str  # the URL wrk POSTs to
    pid: int

    @property
    def name(self) -> str:
        return f"{self.kind} [{self.opts}]"


@dataclass(frozen=True)
class Measured:
    target: Target
    result: WrkResult
    problem: str | None  # why the rate is not throughput, or None
    cpu_ms: float  # the server process's CPU time (all threads, user + system) per answer
    sys_ms: float  # of which in the kernel
    switches: float  # voluntary context switches (all threads) per answer: waits, thread hand-offs


def child_env(database_url: str, data_dir: str, opts: str, log_level: str) -> dict[str, str]:
    """The environment of both children of one option set: only intake runs, no key, quiet logs."""
    return {
        "DATABASE_URL": database_url,
        "DATA_DIR": data_dir,
        "API_KEYS": "",
        "SERVE_ROLE": "api",
        "SCHEDULER_ENABLED": "false",
        "LOG_LEVEL": log_level,
        **SERVER_OPTS[opts],
    }


@asynccontextmanager
async def servers(url: str, opts_list: list[str], log_level: str) -> AsyncIterator[list[Target]]:
    """The app and the no-op server for every option set, each in its own process; all killed
    (process group, SIGKILL) on the way out, whatever happened."""
    async with AsyncExitStack() as stack:
        data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bg_bench_data_"))
        targets = []
        for opts in opts_list:
            env = child_env(url, data_dir, opts, log_level)
            app, app_url = await stack.enter_async_context(app_process(env))
            targets.append(Target("app", opts, app_url + "/api/requests", app.pid))
            command = ("-m", "bench.noop_server")
            noop, noop_url = await stack.enter_async_context(app_process(env, command=command))
            targets.append(Target("no-op", opts, noop_url + "/noop", noop.pid))
        yield targets


async def stored(url: str, prefix: str) -> int:
    """How many requests rows a load run left (its custom_ids start with `prefix`)."""
    db = raw_database(url)
    try:
        async with db.engine.connect() as connection:
            query = text("SELECT count(*) FROM requests WHERE custom_id LIKE :p")
            return int(await connection.scalar(query, {"p": prefix + "%"}))
    finally:
        await db.dispose()


def usage(pid: int) -> tuple[float, float, int]:
    """A process's user and system CPU seconds and voluntary context switches so far (all its
    threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        switches += int(status.split("voluntary_ctxt_switches:", 1)[1].split()[0])
    return int(fields[11]) / tick, int(fields[12]) / tick, switches


async def load(target: Target, prefix: str, args: argparse.Namespace, database_url: str) -> Measured:
    """One wrk run against `target`; for the app, also check that every 202 was stored."""
    before = usage(target.pid)
    result = await wrk.post(target.url, prefix, args.duration, args.connections, args.threads)
    user, system, switches = (b - a for a, b in zip(before, usage(target.pid), strict=True))
    answers = max(result.requests, 1)
    problem = result.problem
    if problem is None and target.kind == "app":
        # wrk counts answers; in-flight requests at the end may add rows, never remove them.
        rows = await stored(database_url, prefix)
        if rows < result.requests:
            problem = f"{rows} rows stored for {result.requests} 202 answers"
    cpu_ms = (user + system) * 1000 / answers
    return Measured(target, result, problem, cpu_ms, system * 1000 / answers, switches / answers)


async def profile(target: Target, args: argparse.Namespace) -> str:
    """An extra, unmeasured app load with py-spy attached: where intake's time goes."""
    out = Path(args.profile)
    seconds = max(args.duration - 2, 1)
    spy = asyncio.create_task(pyspy.record(target.pid, seconds, out))
    await asyncio.sleep(1)  # let py-spy attach before the load starts
    await wrk.post(target.url, "profile-", args.duration, args.connections, args.threads)
    await spy
    return f"{target.name}, raw stacks in {out}\n" + pyspy.summarize(out, seconds)


async def run(args: argparse.Namespace) -> tuple[list[list[Measured]], str | None]:
    """Warm every server up, then `rounds` rounds of one wrk run per server, order rotating."""
    rounds: list[list[Measured]] = []
    summary = None
    async with fresh_database(args.db) as url, servers(url, args.opts, args.log_level) as targets:
        for i, target in enumerate(targets):
            await wrk.post(target.url, f"warm{i}-", WARM_UP_SECONDS, args.connections, args.threads)
        for r in range(args.rounds):
            shift = r % len(targets)
            order = targets[shift:] + targets[:shift]
            measured = [await load(t, f"r{r}t{targets.index(t)}-", args, url) for t in order]
            rounds.append(sorted(measured, key=lambda m: targets.index(m.target)))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(_cell(m) for m in measured), flush=True)
        if args.profile:
            summary = await profile(targets[0], args)
    return rounds, summary


def _cell(m: Measured) -> str:
    if m.problem:
        return f"{m.target.name} INVALID ({m.problem})"
    return f"{m.target.name} {m.result.rate:,.0f}/s"


def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    middle = format(statistics.median(values), fmt)
    return middle if len(values) == 1 else f"{middle} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def _median(values: list[float], fmt: str = ".1f") -> str:
    return format(statistics.median(values), fmt) if values else "-"


HEADER = ("server", "req/s per round", "median (range)", "p50 ms", "p99 ms", "CPU ms/req (sys)", "ctx sw/req")
WIDTHS = (32, 36, 26, 8, 8, 17, 0)


def _columns(*cells: str) -> str:
    return "  " + " ".join(f"{cell:<{width}}" for cell, width in zip(cells, WIDTHS, strict=True)).rstrip()


def _server_row(runs: list[Measured]) -> str:
    """One server's line: its rate per round, median and range, and the medians of the rest."""
    valid = [m for m in runs if m.problem is None]
    return _columns(
        runs[0].target.name,
        ", ".join("INVALID" if m.problem else f"{m.result.rate:,.0f}" for m in runs),
        _spread([m.result.rate for m in valid], ",.0f"),
        _median([m.result.p50_ms for m in valid]),
        _median([m.result.p99_ms for m in valid]),
        f"{_median([m.cpu_ms for m in valid], '.2f')} ({_median([m.sys_ms for m in valid], '.2f')})",
        _median([m.switches for m in valid]),
    )


def paired(rounds: list[list[Measured]], opts: str) -> list[tuple[float, float] | None]:
    """Per round, the app's and the no-op route's rates for one option set; None where either
    run was invalid."""
    found: list[tuple[float, float] | None] = []
    for row in rounds:
        app, noop = (
            next(m for m in row if m.target.kind == k and m.target.opts == opts) for k in ("app", "no-op")
        )
        found.append(None if app.problem or noop.problem else (app.result.rate, noop.result.rate))
    return found


def outcomes(rounds: list[list[Measured]], args: argparse.Namespace) -> list[summary.Outcome]:
    """Per option set: the app's rate against the no-op route's, in the rounds where both were valid."""
    found = []
    for opts in args.opts:
        if not (valid := [pair for pair in paired(rounds, opts) if pair]):
            continue
        app_rates, noop_rates = [a for a, _ in valid], [n for _, n in valid]
        which = "" if opts == "default" else f" [{opts}]"
        found.append(
            summary.Outcome(
                path=f"Single intake, durable, {args.connections} clients ({args.db}){which}",
                measured=f"app {summary.rates(app_rates)} vs no-op route {summary.rates(noop_rates)}",
                figures=summary.ratios(app_rates, noop_rates),
                goal=0.6,  # issue 30
            )
        )
    return found


def table(rounds: list[list[Measured]], args: argparse.Namespace) -> str:
    """Per server: rate and latency per round (medians, ranges); per option set: app / no-op."""
    lines = [
        f"bench.http_intake  db={args.db}  wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration:g}s  rounds={args.rounds}  log_level={args.log_level}",
        _columns(*HEADER),
    ]
    lines += [_server_row([row[column] for row in rounds]) for column in range(len(rounds[0]))]
    for opts in args.opts:
        ratios = [pair[0] / pair[1] if pair else None for pair in paired(rounds, opts)]
        per_round = ", ".join("INVALID" if x is None else f"{x:.2f}" for x in ratios)
        valid_ratios = [x for x in ratios if x is not None]
        lines.append(
            _columns(f"app / no-op [{opts}]", per_round, _spread(valid_ratios, ".2f"), "", "", "", "")
        )
    invalid = [m for row in rounds for m in row if m.problem]
    if invalid:
        lines.append(f"  {len(invalid)} invalid run(s), left out of medians and ratios:")
        lines += [f"    {m.target.name}: {m.problem}" for m in invalid]
    return "\n".join(lines)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> str:
    """nproc, CPU model and load average, for the record."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    return f"{os.cpu_count()} cores, {model}, Python {sys.version.split()[0]}, load average {load_average()}"


def record(command: str, before: str, load_after: str, body: str, name: str = "bench.http_intake") -> None:
    """Append a run of benchmark `name` to docs/benchmark-history.md (only with --record)."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = (
        f"\n### {name} run, {when}\n\n"
        f"Machine at start: {before}; load average at the end: {load_after}.\n\n"
        f"```\n$ {command}\n{body}\n```\n"
    )
    with BENCHMARKS.open("a") as out:
        out.write(section)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.http_intake", description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10, help="seconds of each wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--server-opts",
        dest="opts",
        default="default",
        help=f"comma list of {', '.join(SERVER_OPTS)}; each is measured in the same run",
    )
    run_options(parser)
    args = parser.parse_args()
    args.opts = [o.strip() for o in args.opts.split(",") if o.strip()]
    if unknown := [o for o in args.opts if o not in SERVER_OPTS]:
        parser.error(f"unknown --server-opts {unknown}; choose from {', '.join(SERVER_OPTS)}")
    if not wrk.available():
        parser.error("wrk is not installed (apt-get install wrk)")
    return args


def run_options(parser: argparse.ArgumentParser) -> None:
    """--log-level, --profile and --record, as bench.http_intake and bench.bulk_intake take them."""
    parser.add_argument(
        "--log-level", default="warning", help="LOG_LEVEL of the app (info logs every request)"
    )
    parser.add_argument("--profile", metavar="FILE", help="after the rounds, py-spy the app into FILE")
    parser.add_argument(
        "--record", action="store_true", help="append the results to docs/benchmark-history.md"
    )


def start_run() -> str:
    """Make SIGTERM end the run like Ctrl-C does (the finally blocks kill the children and drop
    the database); print and return the machine's description."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    before = machine()
    print(f"machine: {before}", flush=True)
    return before


async def main(args: argparse.Namespace) -> None:
    before = start_run()
    rounds, profiled = await run(args)
    load_after = load_average()
    body = table(rounds, args)
    print(body)
    if profiled:
        print(profiled)
    for outcome in outcomes(rounds, args):
        summary.report(outcome)
    if args.record:
        command = ".venv/bin/python -m bench.http_intake " + shlex.join(sys.argv[1:])
        record(command, before, load_after, body + (f"\n{profiled}" if profiled else ""))
        print(f"recorded in {BENCHMARKS}")


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args()))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM: cleaned up on the way out
        sys.exit("bench.http_intake: interrupted; servers stopped, database removed")
