"""SQLite worker specifics: group commit, failures inside one batch, lifecycle."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sipwake.store import Binding, User
from sipwake.store.sqlite import SQLiteStore


def binding(key: str) -> Binding:
    return Binding("sip:a@example.com", key, f"sip:{key}@192.0.2.1", 10.0, "c", 1)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "s.db"))
    await s.open()
    yield s
    await s.close()


async def in_one_batch(store: SQLiteStore, calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run the calls so that the worker takes them all in one batch."""
    gate = threading.Event()
    hold = asyncio.ensure_future(store._call(lambda conn: gate.wait(5)))  # keeps the worker busy
    tasks = [asyncio.ensure_future(call()) for call in calls]
    await asyncio.sleep(0.01)  # every call is queued now
    gate.set()
    await hold
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_failing_statement_fails_only_its_caller(store: SQLiteStore) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.put_binding(binding("a")),
        lambda: store.put_user(User(None, "example.com", "m", "s")),  # type: ignore[arg-type]
        lambda: store.put_binding(binding("b")),
    ]
    ok1, failed, ok2 = await in_one_batch(store, calls)
    assert ok1 is None and ok2 is None
    assert isinstance(failed, sqlite3.IntegrityError)
    assert [b.key for b in await store.bindings("sip:a@example.com")] == ["a", "b"]


async def test_partial_job_is_undone_alone(store: SQLiteStore) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO users VALUES ('half', 'd', 'm', 's', 0)")
        raise ValueError("second step failed")

    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.put_user(User("before", "d", "m", "s")),
        lambda: store._call(half_then_fail),
        lambda: store.put_user(User("after", "d", "m", "s")),
    ]
    results = await in_one_batch(store, calls)
    assert isinstance(results[1], ValueError)
    assert [u.username for u in await store.list_users()] == ["after", "before"]


async def test_error_that_aborts_the_transaction_reruns_the_others(store: SQLiteStore) -> None:
    await store.put_user(User("taken", "d", "m", "s"))

    def rollback_everything(conn: sqlite3.Connection) -> None:
        # OR ROLLBACK ends the whole transaction, not just this statement
        conn.execute("INSERT OR ROLLBACK INTO users VALUES ('taken', 'd', 'm', 's', 0)")

    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.put_binding(binding("a")),
        lambda: store._call(rollback_everything),
        lambda: store.put_binding(binding("b")),
    ]
    ok1, failed, ok2 = await in_one_batch(store, calls)
    assert ok1 is None and ok2 is None
    assert isinstance(failed, sqlite3.IntegrityError)
    assert [b.key for b in await store.bindings("sip:a@example.com")] == ["a", "b"]


async def test_two_processes_share_the_file(tmp_path: Path) -> None:
    # e.g. `sipwake user add` while the server runs: busy_timeout makes them take turns
    a, b = SQLiteStore(str(tmp_path / "s.db")), SQLiteStore(str(tmp_path / "s.db"))
    await a.open()
    await b.open()
    try:
        await asyncio.gather(
            *(
                s.put_binding(binding(f"{n}-{i}"))
                for i in range(200)
                for n, s in [("a", a), ("b", b)]
            )
        )
        assert len(await a.all_bindings()) == 400
    finally:
        await a.close()
        await b.close()


async def test_wal_mode(store: SQLiteStore) -> None:
    rows = await store._call(lambda conn: conn.execute("PRAGMA journal_mode").fetchall())
    assert rows == [("wal",)]


async def test_in_memory() -> None:
    s = SQLiteStore(":memory:")
    await s.open()
    await s.put_user(User("a", "d", "m", "s"))
    assert len(await s.list_users()) == 1
    await s.close()


async def test_closed_store_refuses_calls(store: SQLiteStore) -> None:
    pending = asyncio.ensure_future(store.put_binding(binding("queued")))
    await asyncio.sleep(0)
    await store.close()
    await pending  # queued before close: still committed
    with pytest.raises(RuntimeError, match="not open"):
        await store.bindings("sip:a@example.com")
    await store.close()  # twice is fine

    await store.open()  # and it can be opened again
    assert [b.key for b in await store.bindings("sip:a@example.com")] == ["queued"]


async def test_open_fails_cleanly_on_bad_path(tmp_path: Path) -> None:
    s = SQLiteStore(str(tmp_path / "missing-dir" / "s.db"))
    with pytest.raises(sqlite3.OperationalError):
        await s.open()
    with pytest.raises(RuntimeError):
        await s.get_user("a", "d")


async def test_reads_bypass_the_queue_and_fall_back_when_locked(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.put_user(User("a", "d", "m", "s"))
    gate = threading.Event()
    busy = asyncio.ensure_future(store._call(lambda conn: gate.wait(5)))  # worker occupied
    assert (await store.get_user("a", "d")) is not None  # read on the loop's connection
    gate.set()
    await busy
    # a lock the direct read meets (another process recovering the WAL) must not stall
    # the loop: it gives up at once and the worker reads instead

    class Locked:
        def execute(self, sql: str, params: Any) -> Any:
            raise sqlite3.OperationalError("database is locked")

    reader, store._reader = store._reader, Locked()  # type: ignore[assignment]
    caplog.set_level("DEBUG", logger="sipwake.store.sqlite")
    try:
        user = await store.get_user("a", "d")
    finally:
        store._reader = reader
    assert user is not None and user.username == "a"
    assert "direct read failed (database is locked)" in caplog.text
