"""Full cycle collections: at quiet moments, at the latest every MAX_GAP; gc itself
only collects gen 0."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sipwake.collector import CHECK, MAX_GAP, MIN_GAP, QUIET, FullCollections
from sipwake.testing import ManualScheduler


class Cpu:
    """Process CPU seconds that the test spends: `load` of each second is busy."""

    def __init__(self, clock: ManualScheduler) -> None:
        self.clock = clock
        self.load = 0.0
        self.used = 0.0
        self._seen = clock.time()

    def __call__(self) -> float:
        self.used += (self.clock.time() - self._seen) * self.load
        self._seen = self.clock.time()
        return self.used


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def collector(clock: ManualScheduler, cpu: Cpu) -> tuple[FullCollections, list[float]]:
    times: list[float] = []

    def collect() -> int:
        times.append(clock.time())
        return 0

    full = FullCollections(clock, cpu, collect)
    full.start()
    return full, times


def test_quiet_process_collects_after_min_gap_only(thresholds: None) -> None:
    clock = ManualScheduler(1000.0)
    cpu = Cpu(clock)
    full, times = collector(clock, cpu)
    clock.advance(MIN_GAP - CHECK)
    assert times == []  # idle, but the last one (start) is not old enough
    clock.advance(CHECK)
    assert times == [1000.0 + MIN_GAP]
    clock.advance(MIN_GAP)
    assert times == [1000.0 + MIN_GAP, 1000.0 + 2 * MIN_GAP]
    full.stop()
    clock.advance(10 * MAX_GAP)
    assert len(times) == 2 and clock.pending == 0


def test_busy_process_waits_for_quiet_seconds_then_max_gap(thresholds: None) -> None:
    clock = ManualScheduler()
    cpu = Cpu(clock)
    cpu.load = 0.9
    full, times = collector(clock, cpu)
    clock.advance(300)
    assert times == []  # busy all along
    cpu.load = 0.1
    clock.advance(QUIET - CHECK)
    cpu.load = 0.9  # load is back before QUIET seconds of calm: not now
    clock.advance(10)
    assert times == []
    cpu.load = 0.1
    clock.advance(QUIET)
    assert times == [310 + QUIET - CHECK + QUIET]
    cpu.load = 1.0  # busy without a break: still one every MAX_GAP, to bound garbage
    clock.advance(MAX_GAP)
    assert times == [times[0], times[0] + MAX_GAP]
    full.stop()


def test_gc_itself_collects_gen_0_only(thresholds: None) -> None:
    clock = ManualScheduler()
    full, _ = collector(clock, Cpu(clock))
    assert gc.get_threshold()[0] == 1_000
    runs: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        for _ in range(200):  # ~200,000 tracked allocations
            junk: list[object] = []
            for _ in range(1000):
                junk.append([junk])
    finally:
        gc.callbacks.remove(seen)
    # gen 0 ran, often; gen 1 never (under load it only visited live calls again)
    assert len(runs) > 100 and set(runs) == {0}
    full.stop()


def test_real_collection_frees_cycles(thresholds: None) -> None:
    clock = ManualScheduler()
    cpu = Cpu(clock)
    full = FullCollections(clock, cpu)  # the real mechanism: gc.collect(2)
    full.start()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    gc.collect(1)
    gc.collect(1)  # in the old generation now, where only a full collection looks
    count = sum(isinstance(o, Node) for o in gc.get_objects(2))
    del a, b
    clock.advance(MIN_GAP)
    assert full.runs == 1
    assert sum(isinstance(o, Node) for o in gc.get_objects(2)) == count - 2
    full.stop()
