"""calls/log.py: call-log rows written behind the calls, a transaction per batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sipwake.calls.log import LOG_BATCH, LOG_DELAY, CallLogWriter
from sipwake.store.models import CallRecord
from sipwake.testing import ManualScheduler


class Store:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    async def put_calls(self, records: Sequence[CallRecord]) -> None:
        if self.fail:
            raise ConnectionError("store down")
        self.batches.append([r.call_id for r in records])


def record(n: int) -> CallRecord:
    return CallRecord(f"call-{n}", "sip:bob@x", "sip:alice@x", "alice", "Alice", 1.0)


async def test_rows_of_calls_ending_together_share_one_write() -> None:
    store, clock = Store(), ManualScheduler()
    writer = CallLogWriter(store, clock)
    for n in range(3):
        writer.put(record(n))
    await asyncio.sleep(0)
    assert store.batches == []  # nobody waits for them: they wait for each other
    clock.advance(LOG_DELAY)
    await writer.flush()
    assert store.batches == [["call-0", "call-1", "call-2"]]
    writer.put(record(3))
    await writer.flush()  # a stop (or a test) does not wait for the delay
    assert store.batches[-1] == ["call-3"]
    assert clock.pending == 0


async def test_a_full_batch_goes_without_waiting() -> None:
    store, clock = Store(), ManualScheduler()
    writer = CallLogWriter(store, clock)
    for n in range(LOG_BATCH):
        writer.put(record(n))
    await asyncio.sleep(0)
    assert [len(b) for b in store.batches] == [LOG_BATCH]


async def test_a_failed_write_is_logged_not_raised(caplog: object) -> None:
    store, clock = Store(fail=True), ManualScheduler()
    writer = CallLogWriter(store, clock)
    writer.put(record(1))
    await writer.flush()
    assert "1 rows not stored" in getattr(caplog, "text", "")
