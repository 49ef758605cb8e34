"""Tasks.start (eager_task): a task whose first steps run at once, in the caller, already
as that task; what follows its first wait goes on as any task's."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sipwake.tasks import Tasks


async def test_the_first_steps_run_at_once_as_the_new_task() -> None:
    tasks = Tasks("t")
    me = asyncio.current_task()
    seen: list[object] = []
    gate = asyncio.get_running_loop().create_future()

    async def work() -> str:
        seen.append(asyncio.current_task())
        await gate
        seen.append(asyncio.current_task())
        return "done"

    task = tasks.start(work())
    assert seen == [task]  # before any turn of the loop, as its own task
    assert asyncio.current_task() is me  # the caller's task is the current one again
    gate.set_result(None)
    assert await task == "done"
    assert seen == [task, task]


async def test_a_timeout_in_the_first_steps_is_the_new_tasks_own() -> None:
    """asyncio.timeout needs the current task: started from a callback (no task) or
    from another task, it cancels the new task, not the caller."""
    tasks = Tasks("t")

    async def slow() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(10)

    started: list[asyncio.Task[None]] = []
    asyncio.get_running_loop().call_soon(lambda: started.append(tasks.start(slow())))
    await asyncio.sleep(0)
    inside = tasks.start(slow())
    for task in (*started, inside):
        with pytest.raises(TimeoutError):
            await task


async def test_done_or_failed_in_the_first_steps(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Tasks("t")

    async def quick() -> int:
        return 7

    async def broken() -> None:
        raise RuntimeError("bug")

    assert await tasks.start(quick()) == 7
    with caplog.at_level(logging.ERROR, "sipwake.tasks"):
        failed = tasks.start(broken(), "the broken one")
        with pytest.raises(RuntimeError):
            await failed
        await tasks.settled()
    assert "the broken one failed" in caplog.text
    assert len(tasks) == 0
