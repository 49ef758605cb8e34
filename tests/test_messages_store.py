"""The inbox part of the Store contract, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sipwake.store import Store, open_store
from sipwake.store.models import InboxMessage
from tests.helpers.node import PG_DSN

BOB = "sip:bob@example.com"
ALICE = "sip:alice@example.com"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store on SQLite, or on a fresh PostgreSQL schema (as `pg_url` makes)."""
    if request.param == "sqlite":
        s = await open_store(f"sqlite:///{tmp_path}/inbox.db")
        yield s
        await s.close()
        return
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        s = await open_store(f"{PG_DSN}?schema={schema}")
        yield s
        await s.close()
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


def msg(key: str, aor: str = BOB, **changes: Any) -> InboxMessage:
    m = InboxMessage(
        id=0, aor=aor, dedup_key=key, from_uri="sip:alice@example.com", from_name="Alice",
        content_type="message/cpim", body=b"\x00\xffbytes \xe2\x9c\x93", imdn_id=f"imdn-{key}",
        received_at=1000.0,
    )
    return dataclasses.replace(m, **changes)


async def test_add_dedup_and_round_trip(store: Store) -> None:
    assert await store.inbox_aors() == set()
    first, new = await store.add_message(msg("k1"))
    assert new and first.id > 0
    again, new = await store.add_message(msg("k1", body=b"other"))
    assert not new and again == first  # the stored one, unchanged
    other_user, new = await store.add_message(msg("k1", aor=ALICE))
    assert new and other_user.id > first.id  # dedup is per recipient
    assert await store.inbox_aors() == {BOB, ALICE}  # whose REGISTER needs a look
    (read,) = await store.messages(BOB)
    assert read == first and read.body == b"\x00\xffbytes \xe2\x9c\x93" and read.silent is False
    await store.add_message(msg("k2", silent=True))
    assert (await store.messages(BOB, after=first.id))[0].silent is True


async def test_paging_is_stable_under_concurrent_inserts(store: Store) -> None:
    """A reader paging with after=<last id> while 8 writers insert never skips one."""
    seen: list[int] = []
    done = asyncio.Event()

    async def writer(w: int) -> None:
        for i in range(25):
            await store.add_message(msg(f"w{w}-{i}"))

    async def reader() -> None:
        after = 0
        while True:
            finished = done.is_set()
            page = await store.messages(BOB, after, 7)
            seen.extend(m.id for m in page)
            if page:
                after = page[-1].id
            elif finished:
                return

    read = asyncio.ensure_future(reader())
    await asyncio.gather(*(writer(w) for w in range(8)))
    done.set()
    await read
    all_ids = [m.id for m in await store.messages(BOB, 0, 1000)]
    assert len(all_ids) == 200 and all_ids == sorted(all_ids)
    assert seen == all_ids


async def test_per_device_delivery_unread_and_ack(store: Store) -> None:
    ids = [(await store.add_message(msg(f"k{i}")))[0].id for i in range(4)]
    await store.add_message(msg("report", silent=True))
    assert await store.unread_count(BOB) == 4  # delivery reports do not count
    await store.mark_delivered(ids[0], "phone", 2000.0)
    await store.mark_delivered(ids[0], "phone", 2001.0)  # twice: harmless
    pending = await store.undelivered_messages(BOB, "phone")
    assert [m.id for m in pending][:3] == ids[1:]
    assert [m.id for m in await store.undelivered_messages(BOB, "tablet")][:4] == ids
    later = await store.undelivered_messages(BOB, "tablet", after=ids[2])
    assert later[0].id == ids[3]
    assert await store.unread_count(BOB) == 3
    (first,) = await store.messages(BOB, limit=1)
    assert first.delivered_at == 2000.0  # the first delivery counts

    alice_id = (await store.add_message(msg("a1", aor=ALICE)))[0].id
    acked = await store.ack_messages(BOB, [ids[1], alice_id, 999_999], 3000.0)
    assert acked == [ids[1]]  # another user's ids and unknown ids are ignored
    assert await store.unread_count(ALICE) == 1
    assert await store.unread_count(BOB) == 2
    # acknowledged over HTTP: no longer delivered over SIP, to any device
    assert ids[1] not in [m.id for m in await store.undelivered_messages(BOB, "tablet")]


async def test_trim_and_purge(store: Store) -> None:
    ids = [(await store.add_message(msg(f"k{i}", received_at=1000.0 + i)))[0].id
           for i in range(5)]
    await store.mark_delivered(ids[1], "phone", 2000.0)
    await store.mark_delivered(ids[3], "phone", 2000.0)
    assert await store.count_messages(BOB) == 5
    assert await store.trim_messages(BOB, 10) == 2  # only delivered ones go
    assert [m.id for m in await store.messages(BOB)] == [ids[0], ids[2], ids[4]]
    assert await store.purge_messages(1003.5, limit=1) == 1
    assert await store.purge_messages(1003.5, limit=10) == 1
    assert [m.id for m in await store.messages(BOB)] == [ids[4]]
    # ids are never reused, even once the newest row is gone
    assert await store.purge_messages(10_000.0) == 1
    new, _ = await store.add_message(msg("fresh"))
    assert new.id > ids[4]


async def test_delivery_cursor_only_moves_forward(store: Store) -> None:
    assert await store.delivery_cursor(BOB, "phone") == 0
    await store.advance_cursor(BOB, "phone", 7)
    await store.advance_cursor(BOB, "phone", 5)  # a late, older write changes nothing
    assert await store.delivery_cursor(BOB, "phone") == 7
    assert await store.delivery_cursor(BOB, "tablet") == 0
    assert await store.delivery_cursor(ALICE, "phone") == 0
