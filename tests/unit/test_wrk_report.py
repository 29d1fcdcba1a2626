"""testkit.wrk, what bench.http_intake reads wrk with: wrk's report, read, and the body it posts."""

from __future__ import annotations

import json
import re

from testkit.builders import client_request
from testkit.wrk import POST_SCRIPT, parse

REPORT = """Running 10s test @ http://127.0.0.1:8080/api/requests
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   210.71ms   22.23ms    1.43s    87.31%
    Req/Sec   150.19     16.37   200.00     73.00%
  Latency Distribution
     50%  200.38ms
     75%  215.36ms
     90%  230.79ms
     99%    1.20s
  3042 requests in 10.01s, 0.66MB read
{extra}Requests/sec:    303.85
Transfer/sec:     67.11KB
"""


def test_a_clean_report_is_throughput() -> None:
    result = parse(REPORT.format(extra=""))
    assert (result.rate, result.requests) == (303.85, 3042)
    assert (result.p50_ms, result.p99_ms) == (200.38, 1200.0)
    assert result.problem is None


def test_non_2xx_answers_or_socket_errors_make_a_run_invalid() -> None:
    rejected = parse(REPORT.format(extra="  Non-2xx or 3xx responses: 12\n"))
    assert rejected.non_2xx == 12
    assert rejected.problem == "12 non-2xx answers"
    errors = "  Socket errors: connect 0, read 1, write 0, timeout 2\n"
    assert parse(REPORT.format(extra=errors)).problem == "3 socket errors"


def test_wrk_posts_the_same_body_as_bench_intake() -> None:
    """The Lua template, filled in, is testkit.builders.client_request (bench.intake's body)."""
    template = "".join(re.findall(r"'([^']*)'", POST_SCRIPT.read_text().split("local template =", 1)[1]))
    body = json.loads(template.replace("%s", "wrk1-7"))
    assert body == client_request("wrk1-7", "http://127.0.0.1:9/hook")
