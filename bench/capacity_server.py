"""The server of bench.adaptive_concurrency, in a process of its own: the inference stand-in with
a capacity (testkit.standins.inference).

    .venv/bin/python -m bench.capacity_server PORT CAPACITY LATENCY QUEUE_SECONDS

At most CAPACITY chat completions are served at once, each answered after LATENCY seconds; a call
beyond them waits up to QUEUE_SECONDS for a place, then is answered 429.
"""

from __future__ import annotations

import sys

import uvicorn

from testkit.standins.inference import InferenceStandin


def main(port: int, capacity: int, latency: float, queue_seconds: float) -> None:
    standin = InferenceStandin()
    standin.capacity, standin.delay_seconds, standin.queue_seconds = capacity, latency, queue_seconds
    # uvloop and httptools, as `batchgate serve` runs: the server's own overhead stays small.
    uvicorn.run(standin, host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
