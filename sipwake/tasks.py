"""Background work, one way: `Tasks` keeps every task it starts (a task nobody holds
can be garbage-collected mid-flight), logs a failure instead of losing it, waits for
the group to settle (tests, a clean stop) and cancels it on stop. Each service that
starts work of its own gets a group; server.py cancels them all when it stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from sipwake.store.errors import log_failure

log = logging.getLogger("sipwake.tasks")

T = TypeVar("T")


class Tasks:
    def __init__(self, name: str = "") -> None:
        self.name = name
        self._running: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._running)

    def spawn(self, work: Coroutine[Any, Any, T], what: str = "") -> asyncio.Task[T]:
        """Start `work`; a failure is logged (as `what`), never lost."""
        task = asyncio.ensure_future(work)
        self._running.add(task)
        self._idle.clear()
        task.add_done_callback(lambda done: self._done(done, what))
        return task

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self._running.discard(task)
        if not self._running:
            self._idle.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log_failure(log, exc, "%s", what or task.get_coro().__qualname__)  # type: ignore[union-attr]

    async def settled(self) -> None:
        """Until nothing started so far (or started by it meanwhile) is still running."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Cancel everything still running and wait for it to finish."""
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
