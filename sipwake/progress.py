"""A one-line progress bar on a terminal (stderr), silent when it is not a terminal, so
that a log or a pipe gets no carriage returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 30  # characters of bar
EVERY = 0.1  # seconds between redraws at most


class ProgressBar:
    def __init__(self, stream: TextIO, total: int, label: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.total = total
        self.label = label
        self.clock = clock
        self.shown = stream.isatty()
        self._started = clock()
        self._drawn_at: float | None = None

    def __call__(self, done: int) -> None:
        """`done` of `total` are done (redrawn at most every EVERY seconds, and at the end)."""
        if not self.shown:
            return
        now = self.clock()
        last = done >= self.total
        if not last and self._drawn_at is not None and now - self._drawn_at < EVERY:
            return
        self._drawn_at = now
        self.stream.write("\r" + self.line(done, now - self._started))
        if last:
            self.stream.write("\n")
        self.stream.flush()

    def line(self, done: int, elapsed: float) -> str:
        share = 1.0 if self.total <= 0 else min(1.0, done / self.total)
        filled = round(WIDTH * share)
        rate = f" {done / elapsed:,.0f}/s" if elapsed > 0 and done else ""
        label = f"{self.label} " if self.label else ""
        return (f"{label}[{'#' * filled}{'.' * (WIDTH - filled)}] "
                f"{done:,}/{self.total:,} {share:4.0%}{rate}")
