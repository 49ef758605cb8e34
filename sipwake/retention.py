"""What is kept, and for how long: the call log (`[calls] log_retention_days`), the
push log (`[push] log_retention_days`) and the list of revoked API tokens (until the
tokens would have expired anyway) are purged every hour, in small chunks so a big
purge never holds the store for long. The inbox has its own purge (messages/inbox.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger("sipwake.retention")

INTERVAL = 3600.0
CHUNK = 1000
DAY = 86400.0


class RetentionStore(Protocol):
    async def purge_calls(self, before: float, limit: int = 1000) -> int: ...

    async def purge_push_attempts(self, before: float, limit: int = 1000) -> int: ...

    async def purge_revoked_tokens(self, now: float) -> int: ...


class Retention:
    def __init__(
        self,
        store: RetentionStore,
        call_days: int,
        push_days: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.call_days = call_days
        self.push_days = push_days
        self.clock = clock

    async def purge(self) -> dict[str, int]:
        """One round; returns how many rows went, per table."""
        now = self.clock()
        gone = {"call_log": 0, "push_attempts": 0}
        if self.call_days > 0:
            gone["call_log"] = await _chunked(self.store.purge_calls, now - self.call_days * DAY)
        if self.push_days > 0:
            before = now - self.push_days * DAY
            gone["push_attempts"] = await _chunked(self.store.purge_push_attempts, before)
        gone["revoked_tokens"] = await self.store.purge_revoked_tokens(now)
        if any(gone.values()):
            log.info("retention: %s", ", ".join(f"{n} {t} rows" for t, n in gone.items() if n))
        return gone

    async def run(self, interval: float = INTERVAL) -> None:
        while True:
            try:
                await self.purge()
            except Exception as exc:  # the store is down: next round
                log.warning("retention purge failed: %r", exc)
            await asyncio.sleep(interval)


async def _chunked(purge: Callable[[float, int], Awaitable[int]], before: float) -> int:
    total = 0
    while True:
        gone = await purge(before, CHUNK)
        total += gone
        if gone < CHUNK:
            return total
