"""Time as the services see it: a `Scheduler` (call later, what time is it), and the
two things async code does with one, `sleep` and `timeout`. The event loop is the
scheduler in production; tests hand in `sipwake.testing.ManualScheduler` and move
time themselves, so park timeouts, alert repeats, coalescing and retries are tested
without waiting for them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol


class Handle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What the code needs from a clock; an asyncio event loop satisfies it."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle: ...

    def time(self) -> float: ...


async def sleep(scheduler: Scheduler, seconds: float) -> None:
    """asyncio.sleep on `scheduler`'s time."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    handle = scheduler.call_later(seconds, wake)
    try:
        await done
    finally:
        handle.cancel()


@asynccontextmanager
async def timeout(scheduler: Scheduler, seconds: float) -> AsyncIterator[None]:
    """asyncio.timeout on `scheduler`'s time: TimeoutError when the block is still
    running `seconds` from now (it is cancelled then)."""
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = scheduler.call_later(seconds, expire)
    cancelling = task.cancelling()
    try:
        yield
    except asyncio.CancelledError:
        if expired and task.uncancel() <= cancelling:
            raise TimeoutError from None
        raise
    finally:
        handle.cancel()
