"""Transaction timers in slots of GRAIN seconds, one event-loop timer per slot.

Every SIP transaction arms two or three timers (retransmit, give up, linger) and cancels
most of them a few milliseconds later, when the answer comes. An event-loop timer each
cost ~2.5 µs to arm and cancel (uvloop: a handle object, a libuv timer, its close), ~4 %
of a proxied call's CPU. Here a timer is an entry in its slot's list and a cancel only
empties it; the loop holds one timer per slot in use. RFC 3261's timers (T1 = 500 ms)
don't mind firing up to GRAIN late.

The transaction layer's `Scheduler` (sipwake.timing) in production; the layer's own tests
run it on sipwake.testing.ManualScheduler.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Final

from sipwake.timing import Handle

log = logging.getLogger("sipwake.sip.timer_slots")

GRAIN: Final = 0.01  # seconds: a timer fires up to this much after its time


class _Entry:
    """One armed timer: cancelling drops its callback, the slot skips it."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self.callback = None


class TimerSlots:
    def __init__(self, loop: asyncio.AbstractEventLoop, grain: float = GRAIN) -> None:
        self._loop = loop
        self._grain = grain
        self._slots: dict[int, list[_Entry]] = {}  # slot number → its timers, in order

    def time(self) -> float:
        return self._loop.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle:
        if delay <= 0:
            return self._loop.call_soon(callback)
        slot = math.ceil((self._loop.time() + delay) / self._grain)
        entry = _Entry(callback)
        entries = self._slots.get(slot)
        if entries is None:
            entries = self._slots[slot] = []
            self._loop.call_at(slot * self._grain, self._fire, slot)
        entries.append(entry)
        return entry

    def pending(self) -> int:
        """Timers armed and not cancelled (tests)."""
        return sum(e.callback is not None for entries in self._slots.values() for e in entries)

    def _fire(self, slot: int) -> None:
        # popped first: a timer armed from a callback goes into a later slot of its own
        for entry in self._slots.pop(slot, []):
            callback = entry.callback
            if callback is None:
                continue
            entry.callback = None
            try:
                callback()
            except Exception:  # one failing timer must not cost the others in its slot
                log.exception("timer callback %r failed", callback)
