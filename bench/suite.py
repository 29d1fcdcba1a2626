"""`make bench`: every benchmark, one after the other, then BENCHMARKS.md rewritten from the run.

    .venv/bin/python -m bench.suite [--only NAME[,NAME...]] [--out BENCHMARKS.md]

Each benchmark runs as its own process (its servers in processes of their own) with BENCH_SUMMARY
set, and reports one outcome per goal there (bench.summary). The file written holds the commit it
measured, the machine, the table of outcomes against the goals, the exact commands and each
benchmark's own output. Every goal gets a row every run: one a benchmark did not report (skipped
for a missing tool, failed, or every round invalid) says so instead of a figure. With --only, just
those run, and the file says so. The suite holds /tmp/batchgate-bench.lock while it runs, so no
two benchmark runs on one machine measure each other.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from bench import summary
from bench.http_intake import load_average, machine

ROOT = Path(__file__).resolve().parent.parent
LOCK = Path("/tmp/batchgate-bench.lock")


def goal(path: str, value: float, unit: str = "", at_most: bool = False) -> summary.Outcome:
    """A goal a benchmark should report, for its row when it reports nothing."""
    return summary.not_run(path, value, "", unit, at_most)


def bulk_goals(db: str, ratio: float) -> tuple[summary.Outcome, ...]:
    """bench.bulk_intake's rows (the same paths and goals it reports)."""
    return tuple(
        g
        for form in ("JSON", "JSONL")
        for g in (
            goal(f"Bulk intake, 50,000 items as {form} ({db})", ratio),
            goal(f"Bulk intake, 50,000 items as {form} ({db}): rate", 50_000, "req/s"),
        )
    )


@dataclass(frozen=True)
class Bench:
    name: str
    line: str  # the module and its options, as typed after `python -m`
    goals: tuple[summary.Outcome, ...]  # the rows it reports, stood in for when it does not
    needs: str = ""  # an executable on PATH the benchmark cannot run without

    @property
    def args(self) -> list[str]:
        return self.line.split()

    @property
    def command(self) -> str:
        return ".venv/bin/python -m " + self.line


def one(name: str, line: str, path: str, value: float, unit: str = "", at_most: bool = False) -> Bench:
    """A benchmark with a single goal."""
    return Bench(name, line, (goal(path, value, unit, at_most),))


def intake(db: str) -> Bench:
    path = f"Single intake, durable, 64 clients ({db})"
    return Bench(
        f"intake-{db}", f"bench.http_intake --db {db} --rounds 2 --duration 8", (goal(path, 0.6),), "wrk"
    )


LOCAL = "bench.local_e2e --db sqlite --requests {} --rounds 2"
LOCAL_PATH = "Local backend end to end, {} requests, {} ms stand-in, concurrency 64 (sqlite)"
AUTO = "capacity-16 stand-in, 100 ms a call"
MEMORY = "Memory: 50,000 requests end to end (sqlite), "
# Under 15 minutes in all on the 2-core machine of BENCHMARKS.md (18 with 100,000 requests end to
# end, a longer real-model probe and more rounds). The drop-in run to completion (1-2 minutes) is
# left out, and the memory benchmark runs 50,000 requests end to end: 1,000,000 take far longer
# (docs/benchmarks.md, "Memory").
BENCHES = (
    intake("sqlite"),
    intake("postgres"),
    Bench("bulk-sqlite", "bench.bulk_intake --db sqlite --rounds 3", bulk_goals("sqlite", 0.5)),
    Bench("bulk-postgres", "bench.bulk_intake --db postgres --rounds 3", bulk_goals("postgres", 0.7)),
    one("local", LOCAL.format(10000), LOCAL_PATH.format("10,000", 50), 0.85),
    one("local-instant", LOCAL.format(10000) + " --latency 0", LOCAL_PATH.format("10,000", 0), 0.5),
    Bench(
        "adaptive",
        # Below the capacity (8) and well past it (48) are never the best fixed concurrency:
        # left out for time.
        "bench.adaptive_concurrency --rounds 2 --fixed 12,16,24,32 --lines 800",
        (
            goal(f"Auto concurrency vs the best fixed one ({AUTO})", 0.9),
            goal(f"Share of auto's calls answered 429 ({AUTO})", 0.01, at_most=True),
        ),
    ),
    one(
        "webhook",
        "bench.delivery --db sqlite --requests 6000 --rounds 2",
        "Webhook delivery, concurrency 64 (sqlite)",
        0.7,
    ),
    one(
        "hanging",
        "bench.hanging_destination --db sqlite --requests 6000 --rounds 2",
        "Webhook delivery with one hanging destination among 100 (sqlite)",
        0.9,
    ),
    Bench(
        "rabbitmq",
        "bench.rabbitmq --db sqlite --requests 5000 --rounds 2",
        (goal("RabbitMQ intake (sqlite)", 0.7), goal("RabbitMQ delivery (sqlite)", 0.8)),
    ),
    Bench(
        "openai-backend",
        "bench.openai_backend --db sqlite --requests 50000 --rounds 2",
        tuple(
            goal(f"OpenAI backend: 50,000-line batch, {phase} (sqlite)", 0.8)
            for phase in ("upload", "collect")
        ),
    ),
    one(
        "openai-face",
        "bench.dropin --face openai --lines 50000 --line-bytes 4000 --no-run --rounds 3",
        "OpenAI face: batch create, 50,000 lines (sqlite)",
        0.7,
    ),
    one(
        "real-model",
        "bench.real_model --db sqlite --requests 100 --rounds 2 --probe 20",
        "Real model (llama.cpp, gemma3 270M): 2 rounds of 100 chat requests through the gateway (sqlite)",
        0.95,
    ),
    Bench(
        "memory",
        "bench.memory --db sqlite --requests 50000 --timeout 600",
        (
            goal("Memory: a 191 MB JSONL upload (/v1/files) adds", 100, "MB", at_most=True),
            goal(MEMORY + "peak RSS", 400, "MB", at_most=True),
            goal(MEMORY + "growth over the second half", 25, "MB", at_most=True),
        ),
    ),
    one(
        "ui",
        "bench.ui --db postgres --samples 30",
        "UI with 1,000,000 requests (postgres): the slowest page's p95",
        150,
        "ms",
        at_most=True,
    ),
)


@dataclass
class Result:
    bench: Bench
    code: int | None  # None: not run
    output: str
    seconds: float
    outcomes: list[summary.Outcome]  # as the benchmark reported them

    def rows(self) -> list[summary.Outcome]:
        """Its rows in BENCHMARKS.md: what it reported, then the goals it did not, saying why."""
        return self.outcomes + missing(self)


def run(bench: Bench, summary_file: str) -> tuple[int, str, float]:
    """Run one benchmark, its output shown as it comes and kept; (exit status, output, seconds)."""
    print(f"\n$ {bench.command}", flush=True)
    started = time.monotonic()
    env = {**os.environ, "BENCH_SUMMARY": summary_file}
    with subprocess.Popen(
        [sys.executable, "-m", *bench.args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    return process.returncode, "".join(lines), time.monotonic() - started


def missing(result: Result) -> list[summary.Outcome]:
    """Rows for the goals a benchmark did not report, saying why: never silence."""
    reported = {o.path for o in result.outcomes}
    absent = [g for g in result.bench.goals if g.path not in reported]
    absent = absent[: max(len(result.bench.goals) - len(result.outcomes), 0)]
    if result.code is None:
        why = f"not run: {result.bench.needs} missing"
    elif result.code != 0:
        why = f"not measured: the benchmark failed (exit status {result.code}; its output below)"
    else:
        why = "not measured: no valid round (its output below)"
    return [replace(g, note=why) for g in absent]


def commit() -> str:
    """The commit measured (short hash), and whether the tree differed from it (BENCHMARKS.md aside)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":!BENCHMARKS.md"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"`{head}`" + (" with uncommitted changes (the tree was dirty)" if changes else " (clean tree)")


def document(results: list[Result], started: str, at: str, total: float, only: str | None) -> str:
    """BENCHMARKS.md: commit, machine, outcomes against the goals, commands, every benchmark's output."""
    outcomes = [o for r in results for o in r.rows()]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m bench.suite{f' --only {only}' if only else ''}`) on {started}, "
        f"at commit {at}, in {total / 60:.1f} minutes; machine: {machine()}.",
        "Each figure is a ratio of the gateway to the limit (the same machine doing the raw work in the same",
        "run), or an absolute figure where the goal is one; the median of the rounds, with their range.",
        "How each benchmark works and what was tried: [docs/benchmarks.md](docs/benchmarks.md).",
        "",
        "| Path | Measured | Figure (range) | Goal | |",
        "|---|---|---|---|---|",
    ]
    verdicts = {"met": "met", "NOT MET": "**not met**", "NOT RUN": "**not run**"}
    for o in outcomes:
        lines.append(
            f"| {o.path} | {o.measured} | {o.shown()} | {o.goal_shown()} | {verdicts[o.verdict()]} |"
        )
    lines += ["", "## Commands", "", "```sh"]
    lines += [
        f"{r.bench.command}   # " + (f"{r.seconds:.0f} s" if r.code is not None else r.output)
        for r in results
    ]
    lines += ["```", ""]
    for r in results:
        lines += [f"## {r.bench.name}", "", "```", f"$ {r.bench.command}", r.output.rstrip(), "```", ""]
    return "\n".join(lines)


@contextmanager
def bench_lock() -> Iterator[None]:
    """Hold LOCK while benchmarks run, unless a parent holds it already (`flock LOCK python -m
    bench.suite`: its descriptor is inherited, and locking it again through a new one would wait
    for ever)."""
    fds = Path("/proc/self/fd")
    if fds.is_dir() and any(_points_at(fd, LOCK) for fd in fds.iterdir()):
        yield
        return
    with LOCK.open("a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {LOCK}: another benchmark run holds it", flush=True)
            fcntl.flock(held, fcntl.LOCK_EX)
        yield


def _points_at(fd: Path, target: Path) -> bool:
    try:
        return fd.resolve() == target.resolve()
    except OSError:
        return False


def run_all(chosen: list[Bench], tmp: Path) -> list[Result]:
    results = []
    for bench in chosen:
        summary_file = str(tmp / f"{bench.name}.jsonl")
        if bench.needs and not shutil.which(bench.needs):
            print(f"\n{bench.name}: not run, needs {bench.needs}", flush=True)
            result = Result(bench, None, f"not run: {bench.needs} missing", 0.0, [])
        else:
            code, output, seconds = run(bench, summary_file)
            result = Result(bench, code, output, seconds, summary.read(summary_file))
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.split("\n")[0])
    parser.add_argument("--only", help=f"comma list of {', '.join(b.name for b in BENCHES)}")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    with bench_lock(), tempfile.TemporaryDirectory(prefix="bg_bench_suite_") as tmp:
        started, at, begun = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), commit(), time.monotonic()
        results = run_all(chosen, Path(tmp))
        total = time.monotonic() - begun
    Path(args.out).write_text(document(results, started, at, total, args.only) + "\n")
    outcomes = [o for r in results for o in r.rows()]
    print(f"\nwrote {args.out}: {len(outcomes)} goals, {total / 60:.1f} min; load average {load_average()}")
    for o in outcomes:
        print(f"  {o.path}: {o.shown()}  goal {o.goal_shown()}  {o.verdict()}")


if __name__ == "__main__":
    main()
