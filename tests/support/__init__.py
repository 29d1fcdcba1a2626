"""Test helpers, imported by the pin tests from here rather than from conftest.

A thin re-export shim for now; it is to be replaced by the real module exporting the same names.
"""

from tests.conftest import (
    RunningApp,
    StartApp,
    fast_settings,
    postgres_database,
    request_payload,
    require_service,
    wait_until,
)

__all__ = [
    "RunningApp",
    "StartApp",
    "fast_settings",
    "postgres_database",
    "request_payload",
    "require_service",
    "wait_until",
]
