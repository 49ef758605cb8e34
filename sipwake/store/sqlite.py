"""SQLite backend: one worker thread owns the connection and commits in groups.

Every call, read or write, becomes a job on a queue. The worker takes everything
queued, runs it in one transaction (each job inside its own SAVEPOINT, so a failing
job is undone alone), commits once, then resolves the callers' futures on their
loop. A write's await therefore returns only once it is committed, and at REGISTER
rates many writes share one commit instead of paying one each.

WAL with synchronous=NORMAL: a committed write survives a crash of the process;
only an OS crash or power loss can take the last commits back.

Reads of a file database skip the queue: WAL lets a second connection, used on the
event loop's own thread, read what is committed without waiting for the writer. A point
read by key costs tens of microseconds there, less than the two thread hand-offs of a
job. Should that reader ever meet a lock (another process recovering the WAL), the
read goes to the worker instead of stalling the loop. A read sees every write whose
await returned; a write still queued (fired and not awaited) may not be visible yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sipwake.store import migrations
from sipwake.store import sql as q

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    write: bool  # False for reads: a batch of reads needs no write lock


# (future, error, value) of one finished job
_Outcome = tuple["asyncio.Future[Any]", Exception | None, Any]


class SQLiteStore(q.SQLStore):
    _q = q.SQLITE

    def __init__(
        self,
        path: str,
        *,
        busy_timeout: float = 5.0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ):
        self.path = path
        self._busy_timeout = busy_timeout  # waits for other processes (e.g. `sipwake user add`)
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._reader: sqlite3.Connection | None = None  # loop thread only

    # lifecycle

    async def open(self) -> None:
        if self._thread is not None:
            raise RuntimeError("SQLiteStore is already open")
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing = False
        self._thread = threading.Thread(
            target=self._worker, args=(ready,), name=f"sqlite:{self.path}", daemon=True
        )
        self._thread.start()
        try:
            await ready
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise
        if self.path != ":memory:":  # a private in-memory database has one connection
            # timeout 0: a busy reader gives up at once and the worker reads instead
            self._reader = sqlite3.connect(self.path, timeout=0, isolation_level=None)

    async def close(self) -> None:
        """Finish the queued jobs, then close the connection."""
        thread = self._thread
        if thread is None or self._closing:
            return
        self._closing = True
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._queue.put(None)
        await asyncio.to_thread(thread.join)
        self._thread = None

    async def _call(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """Run `fn(connection)` on the worker; returns once its batch is committed."""
        if self._thread is None or self._closing:
            raise RuntimeError("SQLiteStore is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put(_Job(fn, future, write))
        return await future

    # primitives of SQLStore (its _write is _execute: every write is batched here);
    # the lambdas run on the worker thread

    async def _execute(self, sql: str, params: q.Row) -> int:
        return await self._call(lambda conn: conn.execute(sql, params).rowcount)

    async def _write_many(self, statements: list[tuple[str, list[q.Row]]]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            for sql, rows in statements:
                conn.executemany(sql, rows)

        await self._call(run)  # one job: a failure rolls back only this job's statements

    async def _fetch(self, sql: str, params: q.Row) -> list[q.Row]:
        if self._reader is not None:
            try:
                rows = self._reader.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                log.debug("direct read failed (%s): through the worker", exc)
            else:
                await asyncio.sleep(0)  # still a suspension point: no polling loop starves others
                return rows
        return await self._call(lambda conn: conn.execute(sql, params).fetchall(), write=False)

    async def _insert_returning(self, sql: str, params: q.Row) -> list[q.Row]:
        # a write job: its batch takes the write lock up front (BEGIN IMMEDIATE)
        return await self._call(lambda conn: conn.execute(sql, params).fetchall())

    # worker thread

    def _worker(self, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except Exception as exc:
            _resolve([(ready, exc, None)])
            return
        _resolve([(ready, None, None)])
        try:
            stop = False
            while not stop:
                jobs: list[_Job] = []
                item = self._queue.get()  # block until there is work
                while True:
                    if item is None:
                        stop = True  # close(): no job comes after it
                    else:
                        jobs.append(item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if jobs:
                    _resolve(_run_batch(conn, jobs))
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn


def _run_batch(conn: sqlite3.Connection, jobs: list[_Job]) -> list[_Outcome]:
    """Run jobs in one transaction; each job's error is its own, not the batch's."""
    fast = _fast_batch(conn, jobs)
    if fast is not None:
        return fast
    failed: list[_Outcome] = []
    todo = jobs
    while todo:
        try:
            done, lost = _try_batch(conn, todo)
        except Exception as exc:  # BEGIN or COMMIT failed: nothing here is durable
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            log.warning("sqlite batch of %d failed: %s", len(todo), exc)
            return failed + [(job.future, exc, None) for job in todo]
        if lost is None:
            return failed + done
        # That job's error rolled back the whole transaction (e.g. SQLITE_FULL,
        # OR ROLLBACK): it fails alone, the others run again in a new transaction.
        index, error = lost
        failed.append((todo[index].future, error, None))
        todo = todo[:index] + todo[index + 1 :]
    return failed


def _fast_batch(conn: sqlite3.Connection, jobs: list[_Job]) -> list[_Outcome] | None:
    """The usual case, no job fails: one transaction without a SAVEPOINT per job (a
    third of the statements, and far less GIL traffic with the event loop's thread).
    None when a job failed: everything was rolled back, to be redone job by job."""
    try:
        conn.execute("BEGIN IMMEDIATE" if any(job.write for job in jobs) else "BEGIN")
        done: list[_Outcome] = [(job.future, None, job.fn(conn)) for job in jobs]
        conn.execute("COMMIT")
    except Exception as exc:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        log.debug("batch of %d redone job by job: %s", len(jobs), exc)
        return None
    return done


def _try_batch(
    conn: sqlite3.Connection, jobs: list[_Job]
) -> tuple[list[_Outcome], tuple[int, Exception] | None]:
    # IMMEDIATE takes the write lock up front, so a write can't hit SQLITE_BUSY midway
    conn.execute("BEGIN IMMEDIATE" if any(job.write for job in jobs) else "BEGIN")
    done: list[_Outcome] = []
    for index, job in enumerate(jobs):
        conn.execute("SAVEPOINT job")
        try:
            value = job.fn(conn)
        except Exception as exc:
            if not conn.in_transaction:
                return [], (index, exc)
            conn.execute("ROLLBACK TO job")  # undo this job's partial changes only
            done.append((job.future, exc, None))
        else:
            done.append((job.future, None, value))
        conn.execute("RELEASE job")
    conn.execute("COMMIT")
    return done, None


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply pending migrations in one transaction (all or none)."""
    conn.execute("BEGIN IMMEDIATE")  # a second process opening the file waits here
    try:
        conn.execute(migrations.render(migrations.SCHEMA_VERSION_TABLE, "sqlite"))
        applied = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
        for migration, statements in migrations.pending(applied, "sqlite"):
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                q.SQLITE.add_schema_version, (migration.version, migration.name, time.time())
            )
            log.info("sqlite schema migrated to version %d", migration.version)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _resolve(outcomes: list[_Outcome]) -> None:
    """Wake each loop once for all of its callers in the batch (usually one loop)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, mine in by_loop.items():
        _post(loop, mine)


def _post(loop: asyncio.AbstractEventLoop, outcomes: list[_Outcome]) -> None:
    try:
        loop.call_soon_threadsafe(_settle, outcomes)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _settle(outcomes: list[_Outcome]) -> None:
    """On the loop: hand each caller its result."""
    for future, exc, value in outcomes:
        if future.done():  # the caller was cancelled; the write happened anyway
            continue
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)
