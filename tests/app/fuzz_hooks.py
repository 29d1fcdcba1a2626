"""Schemathesis hooks for tests/app/test_fuzz.py (SCHEMATHESIS_HOOKS names this file).

DELETE /api/destinations/{id}/secret is a reset, not a removal: the destination signs with the
global secret again and GET .../secret answers that state (200, "global"). Schemathesis's
use_after_free check reads that 200 as a deleted resource still served, and its stateful phase
runs one list of checks for every operation (per-operation check settings apply only to the
phases before it), so the check is replaced by one that skips that path and nothing else.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import use_after_free

RESET_NOT_REMOVAL = "/api/destinations/{destination_id}/secret"


@schemathesis.check
def use_after_free_but_secret_resets(ctx: Any, response: Any, case: Any) -> bool | None:
    """use_after_free, except for a destination's secret, which DELETE resets."""
    if case.operation.path == RESET_NOT_REMOVAL:
        return None
    result: bool | None = use_after_free(ctx, response, case)
    return result
