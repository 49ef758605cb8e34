"""Rate limits: a token bucket per key (a MESSAGE sender, a caller and callee).

A key may take `burst` tokens at once, then `rate` per second. What happens to one
over the limit is the caller's choice (a MESSAGE gets 503 with Retry-After; RFC 3261
has no 429 for SIP).
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_SENDERS = 100_000  # buckets kept; full (idle) ones are dropped beyond this


class RateLimiter:
    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, at)
        # a cluster's other nodes are told of each token taken (sipwake.cluster)
        self.on_take: Callable[[str], None] | None = None

    def take(self, key: str) -> float:
        """0 when `key` may send now (a token is taken), else seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._set(key, tokens - 1.0, now)
        if self.on_take is not None:
            self.on_take(key)
        return 0.0

    def consume(self, key: str) -> None:
        """Another node let `key` through: one token less here too (down to a burst's
        worth of debt, so a cluster-wide flood is paid back before it may go on)."""
        if self.rate <= 0:
            return
        now = self.clock()
        self._set(key, max(self._tokens(key, now) - 1.0, -float(self.burst)), now)

    def _tokens(self, key: str, now: float) -> float:
        """What `key`'s bucket holds now, refilled since it was last touched."""
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def _set(self, key: str, tokens: float, now: float) -> None:
        if len(self._buckets) >= MAX_SENDERS and key not in self._buckets:
            self._forget_idle(now)
        self._buckets[key] = (tokens, now)

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing."""
        full = [
            k for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]  # fmt: skip
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= MAX_SENDERS:  # a flood of distinct senders: start over
            self._buckets.clear()
