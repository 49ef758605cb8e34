"""Log lines at a bounded rate: one per key per interval, however often it happens,
with the number of times it happened in between — so a flood or an outage is one
line a minute in the log, not a megabyte a second."""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_KEYS = 10_000


class LogRate:
    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # key → (logged at, since then)

    def due(self, key: str) -> int | None:
        """None when `key` was logged less than `every` ago (counted); else how many
        times it happened unlogged since the last line (0 for the first)."""
        now = self.clock()
        at, skipped = self._last.get(key, (-self.every, 0))
        if now - at < self.every:
            self._last[key] = (at, skipped + 1)
            return None
        if len(self._last) >= MAX_KEYS:
            self._last.clear()
        self._last[key] = (now, 0)
        return skipped
