"""Prometheus metrics (prometheus-client), served at /metrics.

Events are counted where they happen, in this process: requests accepted, backend calls,
delivery attempts, lease takeovers. What is in the database (batches, requests and deliveries by
status, deliveries due) is read at scrape time by one collector, counted exactly (stats.exact_counts,
cached like the dashboard's numbers, which may be estimates on PostgreSQL), so every replica
reports the same totals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

ACCEPTED = Counter(
    "batchgate_requests_accepted",
    "Requests accepted (committed), by where they came from.",
    ["origin"],
    registry=REGISTRY,
)
INTAKE_COMMIT_ROWS = Histogram(
    "batchgate_intake_commit_rows",
    "Requests written per intake transaction: intakes that arrive while a commit is in flight "
    "share the next one (group commit), so under load this grows and commits per request fall.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
    registry=REGISTRY,
)
BACKEND_CALLS = Histogram(
    "batchgate_backend_call_seconds",
    "Calls to a backend (one HTTP request each), by backend and outcome: ok, error (an error "
    "answer), failed (no answer: connection error or timeout) or cancelled (by Batchgate).",
    ["backend", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
BACKEND_IN_FLIGHT = Gauge(
    "batchgate_backend_in_flight",
    "Calls to a backend waiting for their answer now, by backend.",
    ["backend"],
    registry=REGISTRY,
)
BACKEND_CONCURRENCY = Gauge(
    "batchgate_backend_concurrency",
    "How many calls an inference server backend may have in flight now, by backend.",
    ["backend"],
    registry=REGISTRY,
)
BACKEND_UP = Gauge(
    "batchgate_backend_up",
    "1 when the backend answered its last probe (at most 10 s old at scrape time), by backend.",
    ["backend"],
    registry=REGISTRY,
)
DELIVERY_ATTEMPTS = Counter(
    "batchgate_delivery_attempts",
    "Delivery attempts, by channel and outcome (success, retryable_failure, permanent_failure).",
    ["channel", "outcome"],
    registry=REGISTRY,
)
DESTINATION_HELD = Gauge(
    "batchgate_destination_held",
    "1 for each destination whose deliveries are held: its circuit breaker is open or probing "
    "(paused by an operator shows as open), by destination and breaker state.",
    ["destination", "state"],
    registry=REGISTRY,
)
LEASE_TAKEOVERS = Counter(
    "batchgate_lease_takeovers",
    "Leases taken over after their owner's ran out (a process died or stalled), by kind of row.",
    ["table"],
    registry=REGISTRY,
)
LATE_RESULTS_DROPPED = Counter(
    "batchgate_late_results_dropped",
    "Results dropped because the run that got them no longer held its batch "
    "(cancelled, deleted, taken over).",
    registry=REGISTRY,
)


@contextmanager
def backend_call(backend: str) -> Iterator[list[str]]:
    """Time one backend call; the caller puts its outcome in the yielded list (default failed)."""
    outcome = ["failed"]
    in_flight = BACKEND_IN_FLIGHT.labels(backend)
    in_flight.inc()
    started = time.perf_counter()
    try:
        yield outcome
    except asyncio.CancelledError:
        outcome[0] = "cancelled"  # stopped by us (a lost lease, a shutdown), not by the backend
        raise
    finally:
        in_flight.dec()
        BACKEND_CALLS.labels(backend, outcome[0]).observe(time.perf_counter() - started)


class StoredState(Collector):
    """Gauges of what the database holds, from the last counts taken (see `refresh`)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}
        self.database_up = 1

    def set(self, counts: dict[str, dict[str, int]]) -> None:
        self.counts, self.database_up = counts, 1

    def database_down(self) -> None:
        """The counts could not be read: the last ones stay, marked by batchgate_database_up 0."""
        self.database_up = 0

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "batchgate_database_up", "1 when the last scrape could read the database.", self.database_up
        )
        for kind, by_status in self.counts.items():
            family = GaugeMetricFamily(
                f"batchgate_{kind}", f"{kind.capitalize()} in the database, by status.", labels=["status"]
            )
            for status, n in sorted(by_status.items()):
                family.add_metric([status], n)
            yield family


STORED = StoredState()
REGISTRY.register(STORED)
