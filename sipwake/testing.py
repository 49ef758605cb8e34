"""What tests hand the code instead of the real world: a clock that moves only when
told (`ManualScheduler`). It satisfies `sipwake.timing.Scheduler`, so the transaction
layer and the services run on it unchanged."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable


class _ManualHandle:
    __slots__ = ("_sched", "callback", "cancelled", "when")

    def __init__(self, sched: ManualScheduler, when: float, callback: Callable[[], None]):
        self._sched = sched
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._sched._live -= 1


class ManualScheduler:
    """A fake clock for tests: nothing fires until `advance()` moves time forward.

    Due callbacks run in time order (ties in scheduling order); callbacks scheduled
    while advancing run too if they fall due before the target time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, _ManualHandle]] = []
        self._seq = 0
        self._live = 0

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _ManualHandle:
        when = self.now + max(0.0, delay)
        handle = _ManualHandle(self, when, callback)
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, handle))
        self._live += 1
        return handle

    @property
    def pending(self) -> int:
        """Scheduled callbacks not yet run nor cancelled."""
        return self._live

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def advance(self, seconds: float) -> int:
        """Move the clock forward, running every callback due by then; returns how many ran."""
        target = self.now + seconds
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= target + 1e-9:
            when, _, handle = heapq.heappop(heap)
            if handle.cancelled:
                continue
            handle.cancelled = True
            self._live -= 1
            self.now = max(self.now, when)
            handle.callback()
            ran += 1
        self.now = max(self.now, target)
        return ran

    def run_all(self, limit: float = 86400.0) -> int:
        """Advance until nothing is scheduled (at most `limit` seconds); returns how many ran."""
        end = self.now + limit
        ran = 0
        while (due := self.next_due()) is not None and due <= end:
            ran += self.advance(due - self.now)
        return ran

    async def settle(self, seconds: float = 0.0) -> None:
        """Advance by `seconds`, letting the tasks woken at each step run before the
        next timer fires (for code that awaits sleep()/timeout() on this clock)."""
        target = self.now + seconds
        await _spin()
        while (due := self.next_due()) is not None and due <= target + 1e-9:
            self.advance(due - self.now)
            await _spin()
        self.now = max(self.now, target)
        await _spin()


async def _spin(turns: int = 20) -> None:
    """Let ready tasks run (a few loop turns: a woken task may wake another)."""
    for _ in range(turns):
        await asyncio.sleep(0)
