"""Run a Python module as __main__ with its garbage-collector pauses recorded.

    python bench/gc_pauses.py OUT.jsonl MODULE [ARGS...]

On exit, OUT.jsonl gets one line per collection of 1 ms or more:
{"t": unix time at its end, "gen": generation, "ms": pause}. bench/calls.py uses it
(`--gc`) to show what the server's collector does to latency; the only cost is a
callback per collection.
"""

from __future__ import annotations

import atexit
import gc
import json
import runpy
import sys
import time
from typing import Any

out, module = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
pauses: list[tuple[float, int, float]] = []
started = [0.0]


def on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - started[0]) * 1000
    if ms >= 1.0:
        pauses.append((time.time(), int(info["generation"]), ms))


def dump() -> None:
    with open(out, "w") as f:
        for t, gen, ms in pauses:
            f.write(json.dumps({"t": t, "gen": gen, "ms": round(ms, 2)}) + "\n")


gc.callbacks.append(on_gc)
atexit.register(dump)
runpy.run_module(module, run_name="__main__", alter_sys=True)
