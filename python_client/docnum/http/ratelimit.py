"""A per-subject rate limit on the calls that issue numbers (reserve, next, batches): a token bucket per sub.

Each subject may make ``limit`` such requests a minute (the NestJS service's ``@Throttle(100, 60)``), in
bursts of up to ``limit``; the bucket refills continuously.  A request over the limit gets 429 with
``Retry-After`` (whole seconds until one call is allowed again) and runs nothing.

The buckets live in this process's memory: with several server processes (or hosts) each enforces the limit
on its own share of the traffic.  Put a shared limiter in the proxy in front when that matters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from docnum.http.errors import Problem

__all__ = ["RateLimiter"]

#: How many subjects to keep before buckets that have refilled completely are dropped.
_PRUNE_AT = 10_000


class RateLimiter:
    """Token buckets keyed by subject; ``limit`` per ``period`` seconds, 0 for no limit."""

    def __init__(
        self, limit: int, period: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 0:
            raise ValueError("the rate limit must be 0 (off) or more")
        self.limit = limit
        self.period = period
        self._rate = limit / period if limit else 0.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # subject -> (tokens, at)

    def check(self, subject: str) -> None:
        """Take one token for ``subject``, or raise a 429 :class:`Problem` saying when to come back."""
        if not self.limit:
            return
        now = self._clock()
        tokens, at = self._buckets.get(subject, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - at) * self._rate)
        if tokens < 1.0:
            self._buckets[subject] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self._rate)
            raise Problem(
                429,
                "Too Many Requests",
                f"at most {self.limit} number-issuing requests a minute per subject; try again in {wait} s",
                headers={"Retry-After": str(max(1, wait))},
            )
        self._buckets[subject] = (tokens - 1.0, now)
        if len(self._buckets) > _PRUNE_AT:
            self._prune(now)

    def _prune(self, now: float) -> None:
        full = [
            s for s, (tokens, at) in self._buckets.items() if tokens + (now - at) * self._rate >= self.limit
        ]
        for subject in full:
            del self._buckets[subject]
