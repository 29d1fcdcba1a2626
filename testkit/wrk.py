"""wrk's text report read into numbers, and the Lua script with which wrk posts the benchmarks'
request body (builders.client_request). Pure: the benchmarks run wrk (bench.wrk), the tests check
the reading (tests/unit/test_wrk_report.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

POST_SCRIPT = Path(__file__).with_name("wrk_post.lua")
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reports. Latencies in ms."""

    rate: float  # Requests/sec: every completed answer, 2xx or not
    requests: int
    p50_ms: float
    p99_ms: float
    non_2xx: int  # wrk's "Non-2xx or 3xx responses"
    socket_errors: int  # connect + read + write + timeout
    output: str

    @property
    def problem(self) -> str | None:
        """Why this run's rate is not throughput, or None when every answer was a success."""
        if self.non_2xx:
            return f"{self.non_2xx} non-2xx answers"
        if self.socket_errors:
            return f"{self.socket_errors} socket errors"
        if not self.requests:
            return "no request completed"
        return None


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse(output: str) -> WrkResult:
    """Read wrk's text report (run with --latency); ValueError when a line is missing."""

    def find(pattern: str) -> re.Match[str]:
        if (match := re.search(pattern, output, re.MULTILINE)) is None:
            raise ValueError(f"wrk's report has no match for {pattern!r}:\n{output}")
        return match

    latency = r"^\s+{}%\s+([\d.]+)(us|ms|s|m|h)\s*$"
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        rate=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        requests=int(find(r"^\s+(\d+) requests in ").group(1)),
        p50_ms=_ms(*find(latency.format(50)).groups()),
        p99_ms=_ms(*find(latency.format(99)).groups()),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        output=output,
    )
