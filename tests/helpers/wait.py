"""Waiting for a condition that no event signals (a row written by another process, a
counter in a stand-in): poll it, with a deadline."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def wait_for(check: Callable[[], object | Awaitable[object]], timeout: float = 5.0) -> None:
    """Poll `check()` (which may return an awaitable) until it is true; TimeoutError after
    `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.002)  # short: some checks race a fake clock that runs on
