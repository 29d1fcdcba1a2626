"""The UI login form's throttle (issue 29): 200 wrong keys in a second were all tried. After
`per_client` wrong keys from one client address, or `overall` from all together, within `window`
seconds, the form refuses every try (the right key too) until the oldest of them leaves the window.

Kept in memory, per process: each replica counts its own tries, and a restart forgets them. API
keys on /api and /v1 are not throttled here (each is one constant-time digest lookup).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoginThrottle:
    per_client: int  # LOGIN_FAILURES_PER_CLIENT
    overall: int  # LOGIN_FAILURES_OVERALL
    window: float  # LOGIN_THROTTLE_SECONDS
    clock: Callable[[], float] = time.monotonic
    # client address → the times of its latest wrong keys (at most per_client of them)
    failures: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    everyone: deque[float] = field(default_factory=deque, repr=False)

    def wait(self, client: str) -> float:
        """Seconds before `client` may try a key again; 0 when it may now."""
        now = self.clock()
        waits = [0.0]
        mine = self.failures.get(client)
        if mine is not None and len(mine) >= self.per_client:
            waits.append(mine[0] + self.window - now)
        if len(self.everyone) >= self.overall:
            waits.append(self.everyone[0] + self.window - now)
        return max(waits)

    def failed(self, client: str) -> None:
        """Count a wrong key from `client`."""
        now = self.clock()
        # Tries are refused while throttled, so at most `overall` wrong keys land per window: the
        # clients with none left in it are dropped before the table outgrows that.
        if len(self.failures) > self.overall:
            self.failures = {c: t for c, t in self.failures.items() if t[-1] + self.window > now}
        self.failures.setdefault(client, deque(maxlen=self.per_client)).append(now)
        if len(self.everyone) >= self.overall:
            self.everyone.popleft()
        self.everyone.append(now)
