"""DELIVERY_RETRY_SCHEDULE: the waits between a delivery's attempts, written as "5s,5m,2h"."""

from __future__ import annotations

from functools import lru_cache

UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Svix's spacing: 8 attempts over about 27 hours, so a receiver down for a night still gets it.
DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h"


@lru_cache(maxsize=32)
def parse_waits(value: str) -> tuple[float, ...]:
    """A retry schedule ("5s,5m,2h": numbers of seconds, minutes, hours or days; a bare number
    is seconds) as seconds, in order; ValueError saying what is wrong."""
    waits = []
    for item in (part.strip().lower() for part in value.split(",")):
        number, unit = (item[:-1], item[-1]) if item[-1:] in UNIT_SECONDS else (item, "s")
        try:
            seconds = float(number) * UNIT_SECONDS[unit]
        except ValueError:
            raise ValueError(f"{item!r} is not a wait such as 30s, 5m, 2h or 1d") from None
        if not 0 <= seconds <= 7 * 86400 or seconds != seconds:
            raise ValueError(f"{item!r}: each wait must be from 0 to 7 days")
        waits.append(seconds)
    if not 1 <= len(waits) <= 99:
        raise ValueError("give from 1 to 99 waits, comma-separated")
    return tuple(waits)


def exponential_schedule(base: float, cap: float, attempts: int) -> str:
    """The waits of the exponential backoff used before DELIVERY_RETRY_SCHEDULE (base doubling
    per attempt, capped), as a schedule."""
    return ",".join(f"{min(cap, base * 2.0**n):g}s" for n in range(max(attempts - 1, 1)))
