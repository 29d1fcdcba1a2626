"""bench.suite reports every goal every run: a benchmark skipped, failed or with no valid round
still gets its rows, saying why; and BENCHMARKS.md names the commit it measured."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

import pytest

from bench import suite, summary


def bench(name: str) -> suite.Bench:
    return next(b for b in suite.BENCHES if b.name == name)


def test_a_skipped_benchmark_has_a_row_per_goal_saying_why() -> None:
    skipped = suite.Result(bench("intake-sqlite"), None, "not run: wrk missing", 0.0, [])
    [row] = skipped.rows()
    assert row.shown() == "not run: wrk missing"
    assert row.verdict() == "NOT RUN" and not row.met
    assert "**not run**" in suite.document([skipped], "now", "`abc`", 60, None)


def test_a_failed_benchmark_keeps_what_it_reported_and_names_the_rest() -> None:
    memory = bench("memory")
    upload = summary.Outcome(memory.goals[0].path, "x", [3.0], 100, "MB", at_most=True)
    shown = suite.Result(memory, 1, "Traceback", 9.0, [upload]).rows()
    assert shown[0] is upload and upload.met
    assert [o.path for o in shown[1:]] == [g.path for g in memory.goals[1:]]
    assert all("exit status 1" in o.shown() for o in shown[1:])


def test_a_benchmark_reporting_every_goal_gets_no_extra_rows() -> None:
    rabbit = bench("rabbitmq")
    renamed = [summary.Outcome(f"renamed {i}", "", [1.0], 0.7) for i in range(len(rabbit.goals))]
    assert suite.Result(rabbit, 0, "", 1.0, renamed).rows() == renamed


def test_no_valid_round_is_a_row_too() -> None:
    [row] = suite.Result(bench("ui"), 0, "every round invalid", 1.0, []).rows()
    assert row.shown().startswith("not measured") and row.goal_shown() == "≤ 150 ms"


def test_the_document_names_the_commit_measured() -> None:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    assert suite.commit().startswith(f"`{head.strip()}`")


def test_the_suite_takes_the_lock_and_does_not_wait_for_one_it_inherited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(suite, "LOCK", tmp_path / "bench.lock")
    with suite.bench_lock(), (tmp_path / "bench.lock").open("a") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # As under `flock LOCK python -m bench.suite`: a descriptor of ours holds it already.
    with (tmp_path / "bench.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with suite.bench_lock():
            pass
