"""One line per path a benchmark measured, against its goal, for `make bench` (bench.suite).

A benchmark run alone prints its own table. Run by bench.suite, which sets BENCH_SUMMARY to a file,
it also appends one JSON line per goal there; the suite gathers them into BENCHMARKS.md's table.
A goal that could not be measured (a tool or the model missing, every round invalid) is still a
line: an Outcome with no figures and a `note` saying why (`not_run`).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Outcome:
    """A path's figure against its goal: a ratio to the limit (higher is better, `at_least`)
    or an absolute figure such as milliseconds or megabytes (`at_most`)."""

    path: str  # what was measured, as the goal table names it
    measured: str  # the rates or figures behind the figure, for a reader
    figures: list[float]  # one per round
    goal: float
    unit: str = ""  # "" for a ratio, else "ms", "MB", ...
    at_most: bool = False  # the goal is a ceiling (ms, MB), not a floor (a ratio)
    note: str = ""  # why there are no figures ("not run: wrk missing"), when there are none

    @property
    def figure(self) -> float:
        return statistics.median(self.figures) if self.figures else float("nan")

    @property
    def met(self) -> bool:
        if not self.figures:
            return False
        return self.figure <= self.goal if self.at_most else self.figure >= self.goal

    def verdict(self) -> str:
        return "met" if self.met else ("NOT RUN" if not self.figures else "NOT MET")

    def shown(self) -> str:
        """The median figure with its per-round range, or why there is none."""
        if not self.figures:
            return self.note or "not run"
        fmt = ",.0f" if self.unit else ".2f"
        middle = f"{format(self.figure, fmt)}{(' ' + self.unit) if self.unit else ''}"
        if len(self.figures) > 1:
            middle += f" ({format(min(self.figures), fmt)}-{format(max(self.figures), fmt)})"
        return middle

    def goal_shown(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.goal:g}{(' ' + self.unit) if self.unit else ''}"


def not_run(path: str, goal: float, why: str, unit: str = "", at_most: bool = False) -> Outcome:
    """A goal's line when it could not be measured: `why` ("not run: wrk missing") is its figure."""
    return Outcome(path, measured="", figures=[], goal=goal, unit=unit, at_most=at_most, note=why)


def ratios(gateway: list[float], limit: list[float]) -> list[float]:
    """The per-round ratios of the gateway's rate to the limit's."""
    return [g / lim for g, lim in zip(gateway, limit, strict=True)]


def rates(values: list[float], unit: str = "req/s", digits: int = 0) -> str:
    """A median rate with its range, for Outcome.measured."""
    fmt = f",.{digits}f"
    middle = format(statistics.median(values), fmt)
    if len(values) > 1:
        middle += f" ({format(min(values), fmt)}-{format(max(values), fmt)})"
    return f"{middle} {unit}"


def report(outcome: Outcome) -> None:
    """Print the outcome's line and, under bench.suite, hand it to the suite."""
    print(f"  => {outcome.path}: {outcome.shown()}  goal {outcome.goal_shown()}  {outcome.verdict()}")
    if path := os.environ.get("BENCH_SUMMARY"):
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(outcome)) + "\n")


def read(path: str) -> list[Outcome]:
    """The outcomes a suite run collected."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as lines:
        return [Outcome(**json.loads(line)) for line in lines if line.strip()]
