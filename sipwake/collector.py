"""When the cyclic garbage collector walks the whole heap: at quiet moments we choose,
not whenever allocations happen to cross a threshold.

A full collection visits every tracked object: under load, the live calls, their
transactions and the users cache are millions of them, and one pass stopped the loop
for 1.1-1.4 s (bench/vs_kamailio.py, 7,000 REGISTERs/s then 2,500 calls/s), long
enough for SIPp's retransmissions to pile up and calls to fail. Almost nothing it
found was garbage: calls and transactions free themselves by reference counting
(ClientTransaction lets go of its callback when done). So only gen 0 is still
collected automatically (short pauses; it catches cycles that die young), and full
collections, which also take the cycles gen 0 let through, run here: when the process
has been mostly idle for `QUIET` seconds and the last one is `MIN_GAP` old, or at the
latest every `MAX_GAP`, which bounds what cyclic garbage can pile up under constant
load. Quiet means at most `IDLE` of a core busy in each 1 s check: a burst that began
just before a check shows in it, so a pass rarely lands on the first second of new load.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from sipwake.timing import Handle, Scheduler

log = logging.getLogger("sipwake.collector")

# Gen 0 small, so each pause stays short (bench/calls.py --gc: with 50,000/20 gen-0/1
# collections stalled the loop 30-500 ms; with 1,000/5 none reached 5 ms at the same
# throughput). Gens 1 and 2 are never collected automatically (2^31 - 1, a C int's
# largest, is never reached): a call lives longer than a gen-0 period, so under load
# gen 1 only visited each object of every call a second time, and found nothing (its
# collections cost more than gen 0's and freed 0 objects in a parked-call run).
THRESHOLDS = (1_000, 2**31 - 1, 2**31 - 1)
CHECK = 1.0  # seconds between looks at how busy the process was
IDLE = 0.2  # busy fraction (process CPU / wall time) at or below which it is idle
QUIET = 3.0  # seconds of idle checks in a row
MIN_GAP = 60.0
MAX_GAP = 600.0
SLOW = 0.05  # a full collection this long (seconds) is logged at INFO


def collect_all() -> int:
    return gc.collect(2)


class FullCollections:
    """Policy (`due`) and the timer that applies it; `collect` is the mechanism."""

    def __init__(
        self,
        scheduler: Scheduler,
        cpu: Callable[[], float] = time.process_time,
        collect: Callable[[], int] = collect_all,
        perf: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.scheduler = scheduler
        self.cpu = cpu
        self.collect = collect
        self.perf = perf
        self.last = scheduler.time()
        self.runs = 0
        self._at = self.last
        self._cpu = cpu()
        self._quiet = 0.0  # seconds of idle checks in a row
        self._handle: Handle | None = None

    @staticmethod
    def due(since_last: float, quiet_for: float) -> bool:
        return since_last >= MAX_GAP or (since_last >= MIN_GAP and quiet_for >= QUIET)

    def start(self) -> None:
        """From now on gens 1 and 2 are ours: only gen 0 runs on its own, our timer on."""
        gc.set_threshold(*THRESHOLDS)
        self._handle = self.scheduler.call_later(CHECK, self.check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def check(self) -> None:
        now, cpu = self.scheduler.time(), self.cpu()
        busy = (cpu - self._cpu) / max(now - self._at, 1e-6)
        self._quiet = self._quiet + (now - self._at) if busy <= IDLE else 0.0
        self._at, self._cpu = now, cpu
        if self.due(now - self.last, self._quiet):
            began = self.perf()
            found = self.collect()
            took = self.perf() - began
            self.last = self.scheduler.time()
            self.runs += 1
            self._cpu = self.cpu()  # the collection's own CPU is not the next check's load
            self._quiet = 0.0
            log.log(logging.INFO if took >= SLOW else logging.DEBUG,
                    "full collection: %d unreachable objects, %.0f ms (busy %.0f %%)",
                    found, took * 1000, busy * 100)  # fmt: skip
        self._handle = self.scheduler.call_later(CHECK, self.check)
