"""Transaction timers in slots (sip/timer_slots.py), on a real event loop: each fires
once, in order, not early and at most a slot late; a cancelled one never fires; one
that raises costs the others nothing; the loop holds one timer per slot in use."""

from __future__ import annotations

import asyncio

import pytest

from sipwake.sip.timer_slots import GRAIN, TimerSlots


async def test_timers_fire_in_order_within_a_slot_of_their_time() -> None:
    loop = asyncio.get_running_loop()
    slots = TimerSlots(loop)
    fired: list[tuple[str, float]] = []
    done = loop.create_future()
    start = loop.time()
    for name, delay in (("c", 0.05), ("a", 0.012), ("b", 0.03), ("a2", 0.012)):
        slots.call_later(delay, lambda name=name, delay=delay: fired.append((name, delay)))
    slots.call_later(0.06, lambda: done.set_result(loop.time()))
    late = await asyncio.wait_for(done, 2) - start
    assert [name for name, _ in fired] == ["a", "a2", "b", "c"]
    assert 0.06 <= late + 0.002  # never early (the loop's clock has ms resolution)
    assert slots.pending() == 0


async def test_cancelled_timers_never_fire_and_one_failure_is_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    slots = TimerSlots(loop)
    fired: list[str] = []
    done = loop.create_future()

    def boom() -> None:
        raise RuntimeError("boom")

    gone = slots.call_later(0.02, lambda: fired.append("cancelled"))
    slots.call_later(0.02, boom)
    slots.call_later(0.02, lambda: fired.append("kept"))
    slots.call_later(0.0, lambda: fired.append("soon"))  # next loop turn, no slot
    slots.call_later(0.03, lambda: done.set_result(None))
    gone.cancel()
    assert slots.pending() == 3
    await asyncio.wait_for(done, 2)
    assert fired == ["soon", "kept"]
    assert "boom" in caplog.text


async def test_one_loop_timer_per_slot() -> None:
    loop = asyncio.get_running_loop()
    slots = TimerSlots(loop)
    calls: list[float] = []
    real = loop.call_at

    def counted(when: float, *args: object) -> asyncio.TimerHandle:
        calls.append(when)
        return real(when, *args)  # type: ignore[arg-type]

    loop.call_at = counted  # type: ignore[method-assign]
    try:
        handles = [slots.call_later(0.5 + i * GRAIN / 100, lambda: None) for i in range(50)]
        assert len(calls) <= 2  # 50 timers within half a grain: one or two slots
        for h in handles:
            h.cancel()
        assert slots.pending() == 0
    finally:
        del loop.call_at
