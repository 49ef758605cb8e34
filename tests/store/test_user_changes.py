"""The users' HA1 cache (auth/users.py) and the store's change log behind it: a password
changed or a user deleted by another process or another node is forgotten within one
sync, and no cached HA1 is used past `max_stale` while the log can't be read."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sipwake.auth.users import CHANGES_KEPT, UserDirectory
from sipwake.cli import main
from sipwake.sip.digest import ha1
from sipwake.store.base import Store
from sipwake.store.models import User
from tests.helpers.stores import Backend

D = "example.com"


def user(name: str, password: str) -> User:
    return User(name, D, ha1(name, D, password), ha1(name, D, password, "SHA-256"), 1.0)


class Counting:
    """A store whose user reads are counted, and which can be made to fail."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads = 0
        self.down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def get_user(self, username: str, domain: str) -> User | None:
        self.reads += 1
        if self.down:
            raise ConnectionError("store down")
        return await self.store.get_user(username, domain)

    async def last_user_change(self) -> int:
        if self.down:
            raise ConnectionError("store down")
        return await self.store.last_user_change()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_every_write_to_users_is_logged_in_commit_order(store: Store) -> None:
    start = await store.last_user_change()
    await store.put_user(user("alice", "one"))  # insert
    await store.put_user(user("alice", "two"))  # upsert: an update
    await store.put_users([user("bob", "b"), user("carol", "c")])
    await store.delete_user("bob", D)
    changes = await store.user_changes(start)
    names = [name for _, name, _ in changes]
    # an update logs the row before and after (the same user here)
    assert names == ["alice", "alice", "alice", "bob", "carol", "bob"]
    seqs = [seq for seq, _, _ in changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert await store.last_user_change() == seqs[-1]
    assert [n for _, n, _ in await store.user_changes(seqs[2], limit=2)] == ["bob", "carol"]
    assert await store.trim_user_changes(seqs[3]) >= 4
    assert [n for _, n, _ in await store.user_changes(start)] == ["carol", "bob"]


async def test_a_cached_user_costs_no_store_read(store: Store) -> None:
    await store.put_users([user("alice", "a"), user("bob", "b")])
    counting = Counting(store)
    users = UserDirectory(counting)  # type: ignore[arg-type]
    assert await users.warm(D) == 2
    for _ in range(3):
        found = await users.get("alice", D)
        assert found is not None and found.ha1_md5 == ha1("alice", D, "a")
    assert counting.reads == 0
    assert await users.get("zed", D) is None  # unknown: read once, then remembered
    assert await users.get("zed", D) is None
    assert counting.reads == 1


async def test_another_process_changes_are_seen_after_one_sync(backend: Backend) -> None:
    """Node A caches; node B (or `sipwake user` on A's machine) writes the store."""
    a, b = await backend.open(), await backend.open()
    await b.put_user(user("alice", "old"))
    users = UserDirectory(a)
    await users.warm(D)
    assert (await users.get("zed", D)) is None  # remembered as unknown
    before = await users.get("alice", D)
    assert before is not None and before.ha1_md5 == ha1("alice", D, "old")

    await b.put_user(user("alice", "new"))
    await b.put_user(user("zed", "z"))
    await b.put_user(user("carol", "c"))
    assert await users.sync()
    after = await users.get("alice", D)
    assert after is not None and after.ha1_md5 == ha1("alice", D, "new")
    assert await users.get("zed", D) is not None  # added: no negative entry left
    assert await users.get("carol", D) is not None

    await b.delete_user("alice", D)
    assert await users.sync()
    assert await users.get("alice", D) is None


async def test_cli_passwd_and_del_reach_a_running_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sipwake.store import open_store

    db = tmp_path / "s.db"
    config = tmp_path / "sipwake.toml"
    config.write_text(f'[sip]\ndomain = "{D}"\n[store]\nurl = "sqlite:///{db}"\n')
    argv = ["user", "add", "alice", "--password", "one", "--config", str(config)]
    assert await asyncio.to_thread(main, argv) == 0
    store = await open_store(f"sqlite:///{db}")
    try:
        users = UserDirectory(store)
        await users.warm(D)
        first = await users.get("alice", D)
        assert first is not None
        argv = ["user", "passwd", "alice", "--password", "two", "--config", str(config)]
        assert await asyncio.to_thread(main, argv) == 0
        assert await users.get("alice", D) is first  # not seen until the sync
        assert await users.sync()
        second = await users.get("alice", D)
        assert second is not None and second.ha1_md5 != first.ha1_md5
        argv = ["user", "del", "alice", "--config", str(config)]
        assert await asyncio.to_thread(main, argv) == 0
        assert await users.sync()
        assert await users.get("alice", D) is None
    finally:
        await store.close()


async def test_no_cached_ha1_outlives_max_stale_without_a_sync(store: Store) -> None:
    await store.put_user(user("alice", "a"))
    clock = Clock()
    counting = Counting(store)
    users = UserDirectory(counting, max_stale=30.0, clock=clock)  # type: ignore[arg-type]
    await users.warm(D)
    counting.down = True
    assert not await users.sync()  # the log can't be read
    clock.now += 29
    assert await users.get("alice", D) is not None  # an outage is ridden out...
    assert counting.reads == 0
    clock.now += 2
    with pytest.raises(ConnectionError):  # ...but not past max_stale: read again
        await users.get("alice", D)
    counting.down = False
    assert await users.get("alice", D) is not None
    assert counting.reads == 2
    clock.now += 1
    assert await users.get("alice", D) is not None  # the read vouches for it again
    assert counting.reads == 2


async def test_a_node_too_far_behind_forgets_every_user(store: Store) -> None:
    await store.put_user(user("alice", "a"))
    users = UserDirectory(store)
    await users.warm(D)
    assert len(users) == 1
    users._seq -= CHANGES_KEPT  # as if it had been away while the log moved on
    assert await users.sync()
    assert len(users) == 0
    assert await users.get("alice", D) is not None


async def test_the_cache_is_bounded(store: Store) -> None:
    await store.put_users([user(f"u{i}", "p") for i in range(10)])
    users = UserDirectory(store, max_entries=4)
    assert await users.warm(D) == 4
    for i in range(10):
        assert await users.get(f"u{i}", D) is not None
    assert len(users) == 4
