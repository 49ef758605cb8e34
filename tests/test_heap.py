"""sipwake.heap: the C heap's free pages go back to the OS."""

from __future__ import annotations

import ctypes.util
import gc
import platform
from pathlib import Path

import pytest

from sipwake import heap


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.system() != "Linux" or not ctypes.util.find_library("c"),
                    reason="glibc's malloc_trim")  # fmt: skip
def test_a_burst_of_freed_blocks_leaves_the_resident_set() -> None:
    keep: list[bytes] = []
    burst: list[bytes] = []
    for i in range(60_000):  # 600-byte responses, interleaved with what stays
        burst.append(bytes(600) + i.to_bytes(4, "big"))
        if i % 50 == 0:
            keep.append(bytes(600) + i.to_bytes(4, "big"))
    del burst
    gc.collect()
    before = _rss()
    heap.give_back()
    assert before - _rss() > 10 * 2**20  # most of the ~37 MB of the burst
    assert len(keep) == 1200
