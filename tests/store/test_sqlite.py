"""SQLite specifics: group commit on the loop, failures inside one batch, locks held by
other connections, checkpoints, lifecycle."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sipwake.store import Binding, StoreOpenError, User
from sipwake.store import sqlite as sqlite_module
from sipwake.store.errors import StoreUnavailable
from sipwake.store.sqlite import BUSY_RETRY, SQLiteStore


def binding(key: str) -> Binding:
    return Binding("sip:a@example.com", key, f"sip:{key}@192.0.2.1", 10.0, "c", 1)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "s.db"))
    await s.open()
    yield s
    await s.close()


def count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch the store runs from now on."""
    batches: list[int] = []
    run_batch = sqlite_module._run_batch

    def counting(conn: sqlite3.Connection, jobs: list[Any]) -> Any:
        batches.append(len(jobs))
        return run_batch(conn, jobs)

    monkeypatch.setattr(sqlite_module, "_run_batch", counting)
    return batches


async def in_one_batch(
    store: SQLiteStore, calls: list[Callable[[], Awaitable[Any]]], monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    """Run the calls so that they share one batch (they are all queued in one loop turn),
    and check that they did."""
    batches = count_batches(monkeypatch)
    results = await asyncio.gather(*(call() for call in calls), return_exceptions=True)
    assert batches == [len(calls)]
    return results


async def test_failing_statement_fails_only_its_caller(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.put_binding(binding("a")),
        lambda: store.put_user(User(None, "example.com", "m", "s")),  # type: ignore[arg-type]
        lambda: store.put_binding(binding("b")),
    ]
    ok1, failed, ok2 = await in_one_batch(store, calls, monkeypatch)
    assert ok1 is None and ok2 is None
    assert isinstance(failed, sqlite3.IntegrityError)
    assert [b.key for b in await store.bindings("sip:a@example.com")] == ["a", "b"]


async def test_partial_job_is_undone_alone(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO users VALUES ('half', 'd', 'm', 's', 0)")
        raise ValueError("second step failed")

    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.put_user(User("before", "d", "m", "s")),
        lambda: store._call(half_then_fail),
        lambda: store.put_user(User("after", "d", "m", "s")),
    ]
    results = await in_one_batch(store, calls, monkeypatch)
    assert isinstance(results[1], ValueError)
    assert [u.username for u in await store.list_users()] == ["after", "before"]


async def test_error_that_aborts_the_transaction_reruns_the_others(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put_user(User("taken", "d", "m", "s"))

    def rollback_everything(conn: sqlite3.Connection) -> None:
        # OR ROLLBACK ends the whole transaction, not just this statement
        conn.execute("INSERT OR ROLLBACK INTO users VALUES ('taken', 'd', 'm', 's', 0)")

    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.put_binding(binding("a")),
        lambda: store._call(rollback_everything),
        lambda: store.put_binding(binding("b")),
    ]
    ok1, failed, ok2 = await in_one_batch(store, calls, monkeypatch)
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
    with pytest.raises(StoreOpenError, match="missing-dir does not exist") as exc:
        await s.open()
    assert isinstance(exc.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(RuntimeError):
        await s.get_user("a", "d")


async def test_a_lock_held_elsewhere_never_stalls_the_loop(tmp_path: Path) -> None:
    """`sipwake user add` in another process holds the write lock: our writes wait for it
    without blocking the event loop, reads go on, and the write lands once it is free."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    await store.open()
    other = sqlite3.connect(str(tmp_path / "s.db"), isolation_level=None)
    try:
        await store.put_user(User("a", "d", "m", "s"))
        other.execute("BEGIN IMMEDIATE")  # the other process's write transaction
        write = asyncio.ensure_future(store.put_user(User("b", "d", "m", "s")))
        turns = 0
        for _ in range(20):  # the loop keeps turning while the write waits for the lock
            await asyncio.sleep(BUSY_RETRY)
            turns += 1
        assert not write.done() and turns == 20
        assert (await store.get_user("a", "d")) is not None  # WAL: reads are not blocked
        other.execute("COMMIT")
        await asyncio.wait_for(write, 5)
        assert [u.username for u in await store.list_users()] == ["a", "b"]
    finally:
        other.close()
        await store.close()


async def test_a_lock_held_too_long_fails_the_write(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"), busy_timeout=0.1)
    await store.open()
    other = sqlite3.connect(str(tmp_path / "s.db"), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):  # 503 + Retry-After
            await store.put_user(User("b", "d", "m", "s"))
        other.execute("ROLLBACK")
        await store.put_user(User("c", "d", "m", "s"))  # and the next write goes through
        assert [u.username for u in await store.list_users()] == ["c"]
    finally:
        other.close()
        await store.close()


async def test_checkpoints_run_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's connection never checkpoints (that waits for the disk); the checkpoint
    thread copies the WAL into the database file, and resets a big WAL."""
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY", 0.02)
    monkeypatch.setattr(sqlite_module, "WAL_RESTART_PAGES", 10)
    path = tmp_path / "s.db"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        auto = await store._call(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchall())
        assert auto == [(0,)]
        await asyncio.gather(*(store.put_binding(binding(f"k{i}")) for i in range(2000)))

        def rows_in_the_file() -> int:  # the checkpoint thread's work: nothing to await
            # a reader that ignores the WAL: what it counts is in the database file itself
            deadline, count = time.monotonic() + 10, -1
            while count != 2000 and time.monotonic() < deadline:
                time.sleep(0.02)
                plain = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
                try:
                    count = plain.execute("SELECT count(*) FROM bindings").fetchone()[0]
                except sqlite3.Error:
                    count = -1  # caught in the middle of a checkpoint: look again
                finally:
                    plain.close()
            return count

        assert await asyncio.to_thread(rows_in_the_file) == 2000
    finally:
        await store.close()


class Flaky:
    """The loop's connection, failing its next few statements that match `what`."""

    def __init__(self, conn: sqlite3.Connection, what: str, error: sqlite3.Error, times: int):
        self.conn, self.what, self.error, self.times = conn, what, error, times

    def execute(self, sql: str, params: Any = ()) -> Any:
        if self.times and sql.startswith(self.what):
            self.times -= 1
            raise self.error
        return self.conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


async def test_a_read_that_meets_a_lock_is_tried_again(store: SQLiteStore) -> None:
    await store.put_user(User("a", "d", "m", "s"))
    real = store._conn
    assert real is not None
    busy = sqlite_error("database is locked", sqlite3.SQLITE_BUSY)
    store._conn = Flaky(real, "SELECT", busy, 3)  # type: ignore[assignment]
    try:
        user = await store.get_user("a", "d")
        assert user is not None and user.username == "a"
        store._busy_timeout = 0.05
        store._conn.times = 1_000_000  # type: ignore[union-attr]
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.get_user("a", "d")  # a lock that never goes: an error, in time
    finally:
        store._conn = real


async def test_an_error_at_begin_fails_the_batch_and_the_next_one_works(
    store: SQLiteStore,
) -> None:
    real = store._conn
    assert real is not None
    store._conn = Flaky(real, "BEGIN", sqlite_error("disk I/O error", 10), 1)  # type: ignore[assignment]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                store.put_user(User("a", "d", "m", "s")),
                store.put_user(User("b", "d", "m", "s")),
                return_exceptions=True,
            ),
            5,
        )  # every caller hears of it: none waits for ever
        assert all(isinstance(r, StoreUnavailable) for r in results)  # callers answer 503
        assert not real.in_transaction
        await store.put_user(User("c", "d", "m", "s"))
    finally:
        store._conn = real
    assert [u.username for u in await store.list_users()] == ["c"]


async def test_a_cancelled_close_leaves_nothing_open(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = SQLiteStore(path)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # close() will wait for this lock
        write = asyncio.ensure_future(store.put_user(User("a", "d", "m", "s")))
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.close(), 0.05)
        with pytest.raises(RuntimeError, match="closed"):
            await write  # failed, not left waiting
        assert store._conn is None and store._checkpoints is None
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.open()  # and it opens again
    await store.put_user(User("b", "d", "m", "s"))
    assert [u.username for u in await store.list_users()] == ["b"]
    await store.close()


async def test_a_burst_is_split_into_bounded_batches(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = count_batches(monkeypatch)
    n = 2 * sqlite_module.MAX_BATCH + 500
    await asyncio.gather(*(store.put_binding(binding(f"k{i}")) for i in range(n)))
    assert batches == [sqlite_module.MAX_BATCH, sqlite_module.MAX_BATCH, 500]
    assert len(await store.bindings("sip:a@example.com")) == n


async def test_a_reader_elsewhere_does_not_starve_our_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long read transaction in another process keeps the WAL from being reset; the
    checkpoint thread's RESTART then gives up quickly instead of holding the write lock."""
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY", 0.02)
    monkeypatch.setattr(sqlite_module, "WAL_RESTART_PAGES", 4)
    path = str(tmp_path / "s.db")
    store = SQLiteStore(path)
    await store.open()
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        await store.put_binding(binding("first"))
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM bindings").fetchone()  # an old snapshot, held
        worst = 0.0
        for i in range(60):  # ~0.6 s of writes, a dozen checkpoint cycles
            t = time.monotonic()
            await store.put_binding(binding(f"k{i}-" + "x" * 2000))
            worst = max(worst, time.monotonic() - t)
            await asyncio.sleep(0.01)  # a phone's pace, not a burst
        assert worst < 0.5  # each waits at most ~CHECKPOINT_WAIT, not busy_timeout (5 s)
    finally:
        reader.execute("ROLLBACK")
        reader.close()
        await store.close()


async def test_a_few_reads_return_without_a_loop_turn(store: SQLiteStore) -> None:
    """A request's lookups don't wait a loop turn (an INVITE's push must not queue
    behind what the loop read meanwhile); a loop of reads still lets the others run."""
    await store.put_user(User("alice", "example.com", "ha1", "ha1-256"))
    await asyncio.sleep(0)  # a fresh turn
    turns = 0
    counting = True

    def count() -> None:
        nonlocal turns
        turns += 1
        if counting:
            asyncio.get_running_loop().call_soon(count)

    asyncio.get_running_loop().call_soon(count)
    for _ in range(sqlite_module.READS_PER_TURN):
        assert await store.get_user("alice", "example.com") is not None
    assert turns == 0
    for _ in range(10 * (sqlite_module.READS_PER_TURN + 1)):  # past it, a turn goes by
        await store.get_user("alice", "example.com")
    counting = False
    assert turns >= 10


async def test_writes_behind_answers_share_a_transaction(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bindings written after their 200 arrive one per loop turn: each waits up to LINGER
    for the others, so they share one transaction; a write someone waits on (a device
    before its 200) takes the lingering ones with it at the end of its own turn."""
    batches = count_batches(monkeypatch)
    loop = asyncio.get_running_loop()
    began = loop.time()
    behind = []
    for i in range(5):  # five REGISTERs, five loop turns
        behind.append(asyncio.ensure_future(store.write_bindings([binding(f"k{i}")], [])))
        await asyncio.sleep(0)
    await asyncio.gather(*behind)
    assert batches == [5]
    assert loop.time() - began >= sqlite_module.LINGER * 0.9
    assert len(await store.bindings("sip:a@example.com")) == 5
    # a write that answers wait for: not held back, and the lingering one goes with it
    late = asyncio.ensure_future(store.write_bindings([binding("k5")], []))
    await asyncio.sleep(0)
    began = loop.time()
    await store.put_user(User("a", "d", "m", "s"))
    assert late.done() and batches == [5, 2]
    assert loop.time() - began < sqlite_module.LINGER / 2
