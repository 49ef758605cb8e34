"""The voicemail service's own background work (pushes, NOTIFYs), counted so that tests
and shutdown can wait for it to settle. Tasks run under `server.spawn`, so stopping
the server cancels them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from sipwake.store.errors import log_failure

log = logging.getLogger("sipwake.voicemail")


class Background:
    def __init__(self, spawn: Callable[[Coroutine[Any, Any, Any]], None]) -> None:
        self._spawn = spawn
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def run(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        """Start `work`; a failure is logged (as `what`), never raised."""
        self._running += 1
        self._idle.clear()
        self._spawn(self._guard(work, what))

    async def _guard(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        try:
            await work
        except Exception as exc:
            log_failure(log, exc, "%s", what)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def settled(self) -> None:
        """Wait until nothing started so far (or started by it) is still running."""
        await self._idle.wait()
