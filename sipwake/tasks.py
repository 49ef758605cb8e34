"""Background work, one way: `Tasks` keeps every task it starts (a task nobody holds
can be garbage-collected mid-flight), logs a failure instead of losing it, waits for
the group to settle (tests, a clean stop) and cancels it on stop. Each service that
starts work of its own gets a group; server.py cancels them all when it stops."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections.abc import Callable, Coroutine, Generator
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

    def start(self, work: Coroutine[Any, Any, T], what: str = "") -> asyncio.Task[T]:
        """`spawn`, but the first steps of `work` run at once, here, up to its first
        wait (`eager_task`). A task's first step otherwise waits a loop turn, behind
        everything the loop read meanwhile: a call push must not wait for that."""
        task = eager_task(work)
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


def eager_task(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task for `work` whose first steps run now, in the caller, up to the first
    wait, already as that task (asyncio.current_task() is it, its own context), as
    Python 3.12's eager tasks do; the rest goes on as any task's."""
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        return asyncio.Task(work, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    first = _FirstStep(work)
    context = contextvars.copy_context()
    task: asyncio.Task[T] = loop.create_task(first, context=context)  # steps next turn
    outer = asyncio.tasks.current_task(loop)
    if outer is not None:
        asyncio.tasks._leave_task(loop, outer)
    asyncio.tasks._enter_task(loop, task)
    try:
        context.run(first.run)
    finally:
        asyncio.tasks._leave_task(loop, task)
        if outer is not None:
            asyncio.tasks._enter_task(loop, outer)
    return task


class _Wrapped(Coroutine[Any, Any, Any]):
    """A coroutine standing in for `_coro`: what the protocol needs beyond send/throw."""

    __slots__ = ("__qualname__", "_coro")
    _coro: Coroutine[Any, Any, Any]

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def __iter__(self) -> _Wrapped:
        return self


class _FirstStep(_Wrapped):
    """`work` with its first step taken early (`run`); the task's first step then gets
    what that step gave (what it waits for, its result or its exception)."""

    __slots__ = ("_outcome",)

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.__qualname__ = str(getattr(coro, "__qualname__", "work"))  # Tasks logs it
        self._coro = coro
        self._outcome: tuple[bool, Any] | None = None  # (raised, yielded or exception)

    def run(self) -> None:
        try:
            self._outcome = (False, self._coro.send(None))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # StopIteration (done) included: the task's to raise
            self._outcome = (True, exc)

    def send(self, value: Any) -> Any:
        outcome, self._outcome = self._outcome, None
        if outcome is None:
            return self._coro.send(value)
        raised, what = outcome
        if raised:
            raise what
        return what

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        outcome, self._outcome = self._outcome, None
        if outcome is not None and outcome[0]:
            raise outcome[1]  # over before the task began: its own ending stands
        return self._coro.throw(typ if val is None else val)


class Resumed(_Wrapped):
    """A coroutine whose first step already ran and gave `yielded` (what it waits
    for), handed to a Task to go on: the Task's first step gets `yielded`, and a
    cancellation even before that reaches the coroutine where it waits. A failure goes
    to `failed` (answered like one in Router._guard); cancellation propagates."""

    __slots__ = ("_failed", "_yielded")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        yielded: Any,
        failed: Callable[[Exception], None],
    ) -> None:
        self.__qualname__ = str(getattr(coro, "__qualname__", "handler"))  # Tasks logs it
        self._coro = coro
        self._yielded: Any = yielded
        self._failed = failed

    def send(self, value: Any) -> Any:
        if self._yielded is not _SENT:
            yielded, self._yielded = self._yielded, _SENT
            return yielded
        return self._step(self._coro.send, value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._yielded = _SENT
        return self._step(self._coro.throw, typ if val is None else val)

    def _step(self, step: Callable[[Any], Any], value: Any) -> Any:
        try:
            return step(value)
        except StopIteration:
            raise
        except Exception as exc:
            self._failed(exc)
            raise StopIteration from None


_SENT = object()
