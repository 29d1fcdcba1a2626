"""`make bench`: every benchmark, one after the other, then BENCHMARKS.md rewritten from the run.

    .venv/bin/python -m bench.suite [--only NAME[,NAME...]] [--out BENCHMARKS.md]

Each benchmark runs as its own process (its servers in processes of their own) with BENCH_SUMMARY
set, and reports one outcome per goal there (bench.summary). The file written holds the machine,
the table of outcomes against the goals, the exact commands and each benchmark's own output. With
--only, just those run, and the file says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import summary
from bench.http_intake import load_average, machine

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bench:
    name: str
    args: tuple[str, ...]
    needs: str = ""  # an executable on PATH the benchmark cannot run without

    @property
    def command(self) -> str:
        return ".venv/bin/python -m " + " ".join(self.args)


# 12 minutes in all on the 2-core machine of BENCHMARKS.md (about 17 on a slower one). The drop-in run
# to completion (1-2 minutes) is left out: the memory benchmark runs 200,000 requests end to end instead.
BENCHES = (
    Bench("intake-sqlite", ("bench.http_intake", "--db", "sqlite", "--rounds", "2"), "wrk"),
    Bench("intake-postgres", ("bench.http_intake", "--db", "postgres", "--rounds", "2"), "wrk"),
    Bench("bulk-sqlite", ("bench.bulk_intake", "--db", "sqlite", "--rounds", "3")),
    Bench("bulk-postgres", ("bench.bulk_intake", "--db", "postgres", "--rounds", "3")),
    Bench("local", ("bench.local_e2e", "--db", "sqlite", "--requests", "20000", "--rounds", "2")),
    Bench("adaptive", ("bench.adaptive_concurrency", "--rounds", "2")),
    Bench("webhook", ("bench.delivery", "--db", "sqlite", "--requests", "6000", "--rounds", "3")),
    Bench("hanging", ("bench.hanging_destination", "--db", "sqlite", "--requests", "6000", "--rounds", "2")),
    Bench("rabbitmq", ("bench.rabbitmq", "--db", "sqlite", "--requests", "5000", "--rounds", "2")),
    Bench(
        "openai-backend", ("bench.openai_backend", "--db", "sqlite", "--requests", "50000", "--rounds", "2")
    ),
    Bench(
        "openai-face",
        ("bench.dropin", "--face", "openai", "--lines", "50000", "--line-bytes", "4000", "--no-run"),
    ),
    Bench("memory", ("bench.memory", "--db", "sqlite", "--requests", "200000", "--timeout", "600")),
    Bench("ui", ("bench.ui", "--db", "postgres", "--samples", "30")),
)


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


def document(
    results: list[tuple[Bench, int, str, float]], outcomes: list[summary.Outcome], started: str
) -> str:
    """BENCHMARKS.md: machine, outcomes against the goals, commands, and every benchmark's output."""
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m bench.suite`) on {started}; machine: {machine()}.",
        "Each figure is a ratio of the gateway to the limit (the same machine doing the raw work in the same",
        "run), or an absolute figure where the goal is one; the median of the rounds, with their range.",
        "How each benchmark works and what was tried: [docs/benchmarks.md](docs/benchmarks.md).",
        "",
        "| Path | Measured | Figure (range) | Goal | |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.path} | {o.measured} | {o.shown()} | {o.goal_shown()} "
            f"| {'met' if o.met else '**not met**'} |"
        )
    failed = [(b, code) for b, code, _, _ in results if code != 0]
    if failed:
        lines += ["", "Benchmarks that did not finish (no outcome above): "]
        lines += [f"- `{b.command}`: exit status {code}" for b, code in failed]
    lines += ["", "## Commands", "", "```sh"]
    lines += [f"{b.command}   # {seconds:.0f} s" for b, _, _, seconds in results]
    lines += ["```", ""]
    for bench, _, output, _ in results:
        lines += [f"## {bench.name}", "", "```", f"$ {bench.command}", output.rstrip(), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.split("\n")[0])
    parser.add_argument("--only", help=f"comma list of {', '.join(b.name for b in BENCHES)}")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = []
    with tempfile.TemporaryDirectory(prefix="bg_bench_suite_") as tmp:
        summary_file = str(Path(tmp) / "outcomes.jsonl")
        for bench in chosen:
            if bench.needs and not shutil.which(bench.needs):
                print(f"\n{bench.name}: skipped, needs {bench.needs}", flush=True)
                continue
            results.append((bench, *run(bench, summary_file)))
        outcomes = summary.read(summary_file)
    Path(args.out).write_text(document(results, outcomes, started) + "\n")
    print(f"\nwrote {args.out} ({len(outcomes)} outcomes; load average now {load_average()})")
    for o in outcomes:
        print(f"  {o.path}: {o.shown()}  goal {o.goal_shown()}  {'met' if o.met else 'NOT MET'}")


if __name__ == "__main__":
    main()
