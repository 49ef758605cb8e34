"""The registrar's write-behind of bindings, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from sipwake.registrar.writer import BindingWriter
from sipwake.store import Store
from sipwake.store.models import Binding

AOR = "sip:alice@example.com"


def binding(key: str, cseq: int) -> Binding:
    return Binding(AOR, key, f"sip:alice@127.0.0.1:{5000 + cseq}", 4e9, "cid", cseq)


async def test_newest_state_wins_in_order(store: Store) -> None:
    writer = BindingWriter(store)
    for cseq in range(1, 6):
        writer.put(binding("phone", cseq))  # refreshes pile up: only the newest matters
    writer.put(binding("tablet", 1))
    writer.delete(AOR, "tablet")
    await writer.flush()
    (stored,) = await store.bindings(AOR)
    assert stored.key == "phone" and stored.cseq == 5
    # a change queued while a batch is being written lands after it
    writer.put(binding("phone", 6))
    await asyncio.sleep(0)  # the first batch is now in flight
    writer.delete(AOR, "phone")
    await writer.flush()
    assert await store.bindings(AOR) == [] and writer.pending() == 0


async def test_a_failed_write_is_logged_and_the_rest_go_on(store: Store, caplog) -> None:  # type: ignore[no-untyped-def]
    writer = BindingWriter(store)
    bad = binding("bad", 1)
    bad.contact = None  # type: ignore[assignment]  # NOT NULL: the store refuses it
    writer.put(bad)
    writer.put(binding("good", 2))
    await writer.flush()
    assert [b.key for b in await store.bindings(AOR)] == ["good"]
    assert "binding bad of sip:alice@example.com not stored" in caplog.text


async def test_write_bindings_is_one_transaction(store: Store) -> None:
    await store.write_bindings([binding("a", 1), binding("b", 1)], [])
    await store.write_bindings([binding("c", 1)], [(AOR, "a")])
    assert sorted(b.key for b in await store.bindings(AOR)) == ["b", "c"]
    bad = binding("d", 1)
    bad.contact = None  # type: ignore[assignment]
    try:
        await store.write_bindings([binding("e", 1), bad], [(AOR, "b")])
    except Exception:
        pass
    else:
        raise AssertionError("a NOT NULL violation must fail the call")
    assert sorted(b.key for b in await store.bindings(AOR)) == ["b", "c"]  # all or none
