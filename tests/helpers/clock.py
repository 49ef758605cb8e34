"""Time in tests. `sipwake.testing.ManualScheduler` is the one fake clock: code that
takes a scheduler gets it, code that takes a wall clock gets its `time`, and code that
takes an async `sleep` gets `Sleeps` on it."""

from __future__ import annotations

import asyncio

from sipwake.testing import ManualScheduler


class Sleeps:
    """An async `sleep` that takes no real time: the scheduler's clock moves on by the
    seconds asked at once (running what falls due), and each length is kept in `seen`
    so a test can assert the backoff."""

    def __init__(self, scheduler: ManualScheduler) -> None:
        self.scheduler = scheduler
        self.seen: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)
        self.scheduler.advance(seconds)
        await asyncio.sleep(0)  # a real sleep yields to the loop; so does this one
