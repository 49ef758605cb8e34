"""SQLite backend: one connection, used on the event loop's thread, committing in groups.

Writes queue up while the loop runs other callbacks; once per loop turn the queued ones
run in one transaction, commit once, and their callers' futures resolve. A write's
await therefore returns only once it is committed, and at REGISTER rates many writes
share one commit. A job that fails is undone alone (see _run_batch).

Why on the loop's thread: in WAL mode with synchronous=NORMAL a commit only writes to
the OS page cache (tens of microseconds) and a point read takes a few. A worker thread
made each of them a pair of thread hand-offs: the loop and the worker took the GIL from
each other, and at REGISTER rates a fifth of the server's CPU went to waking each other
up (perf: pthread_cond_signal → try_to_wake_up). What waits for the disk is the
checkpoint, copying the WAL into the database file and syncing it: a thread of its own
does that every CHECKPOINT_EVERY seconds (wal_autocheckpoint is off on the loop's
connection), and the last checkpoint at close runs on a helper thread too. The loop
still syncs once per checkpoint cycle at most: the WAL header, when its next commit
starts the WAL over after a complete checkpoint. Batches are capped at MAX_BATCH jobs,
so a burst of writes holds the loop for a bounded time.

The loop's connection never waits for a lock either (busy timeout 0). When another
process holds the write lock (`sipwake user add`, a RESTART checkpoint), the batch is
tried again BUSY_RETRY later, for up to busy_timeout, and the loop runs on meanwhile.

A committed write survives a crash of the process; only an OS crash or power loss can
take the last commits back. A read sees every write whose await returned; a write still
queued (fired and not awaited) may not be visible yet. A read returns without waiting
for a loop turn, unless READS_PER_TURN reads ran in the same turn already (see _read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sipwake.lograte import LogRate
from sipwake.store import StoreOpenError, migrations
from sipwake.store import sql as q
from sipwake.store.errors import outages_raised

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_RETRY = 0.005  # seconds between tries while another connection holds the lock
CHECKPOINT_EVERY = 1.0  # seconds between the checkpoint thread's passive checkpoints
# A WAL this big (pages) is reset with a RESTART checkpoint: under writes that never
# pause, passive checkpoints can trail the last frames forever and the file would grow.
# RESTART holds the write lock while it waits, so it waits only CHECKPOINT_WAIT for our
# own (sub-millisecond) transactions, never for a long reader in another process.
WAL_RESTART_PAGES = 16_384
CHECKPOINT_WAIT = 0.05
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes a reset WAL file is cut back to
READS_PER_TURN = 4  # reads that return without a yield, per loop turn
MAX_BATCH = 1_000  # jobs per transaction: bounds how long one flush holds the loop
# How long a write behind an answer (a push-log row, a binding after its 200) waits for
# others: at 700 parked flows/s each had its own BEGIN/COMMIT, ~5 % of the CPU
LINGER = 0.05
_FAILURES = LogRate(60.0)  # a full disk fails every batch: a line a minute, not each


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


# (future, error, value) of one finished job
_Outcome = tuple["asyncio.Future[Any]", Exception | None, Any]


class _Busy(Exception):
    """Another connection holds the write lock: try the batch again later."""


class SQLiteStore(q.SQLStore):
    _q = q.SQLITE

    def __init__(self, path: str, *, busy_timeout: float = 5.0):
        self.path = path
        self._busy_timeout = busy_timeout  # how long others may hold the lock
        self._conn: sqlite3.Connection | None = None  # the loop's thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: list[_Job] = []
        self._flush_at: asyncio.Handle | None = None  # the flush to come, if scheduled
        self._lingering = False  # that flush waits LINGER for more writes behind answers
        self._busy_since: float | None = None
        self._closing = False
        self._checkpoints: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._reads = 0  # reads in this loop turn

    # lifecycle

    async def open(self) -> None:
        if self._conn is not None:
            raise RuntimeError("SQLiteStore is already open")
        # connecting may wait for another process migrating the file: not on the loop
        try:
            self._conn = await asyncio.to_thread(self._connect)
        except sqlite3.Error as exc:
            raise StoreOpenError(_why_not(self.path, exc)) from exc
        self._loop = asyncio.get_running_loop()
        self._closing = False
        if self.path != ":memory:":
            self._stop_checkpoints.clear()
            self._checkpoints = threading.Thread(
                target=self._checkpoint_loop, name=f"sqlite-checkpoint:{self.path}", daemon=True
            )
            self._checkpoints.start()

    async def close(self) -> None:
        """Commit the jobs queued so far, then close the connection."""
        conn = self._conn
        if conn is None or self._closing:
            return
        self._closing = True
        try:
            while self._jobs:
                if self._flush_at is not None:
                    self._flush_at.cancel()
                self._flush()
                if self._jobs:  # busy: another process holds the lock
                    await asyncio.sleep(BUSY_RETRY)
        finally:  # even when cancelled: nothing may stay open or wait for ever
            if self._flush_at is not None:
                self._flush_at.cancel()
                self._flush_at = None
            self._fail(self._jobs, RuntimeError("SQLiteStore closed"))
            self._jobs = []
            self._stop_checkpoints.set()
            checkpoints, self._checkpoints = self._checkpoints, None
            self._conn = None
            # the last connection to close checkpoints the WAL and syncs: not on the loop
            await asyncio.to_thread(_close_after, checkpoints, conn)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; the connection is made
        # on a helper thread and then used on the loop's thread only
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode != "wal" and self.path != ":memory:":
                raise sqlite3.OperationalError(
                    f"{self.path}: SQLite cannot use WAL mode here (got {mode!r})"
                )
            conn.execute("PRAGMA synchronous = NORMAL")
            _migrate(conn)
            _check_writable(conn)
            conn.execute("PRAGMA busy_timeout = 0")  # the loop never waits for a lock
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread does it
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database file, on this thread: it waits for the disk."""
        conn = sqlite3.connect(self.path, timeout=CHECKPOINT_WAIT, isolation_level=None)
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_EVERY):
                try:
                    _, wal_pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if wal_pages > WAL_RESTART_PAGES:  # busy (a reader elsewhere): next time
                        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                except sqlite3.Error as exc:
                    if (skipped := _FAILURES.due(f"checkpoint {exc}")) is not None:
                        log.warning("sqlite checkpoint failed: %s%s", exc,
                                    f" ({skipped} more since)" if skipped else "")  # fmt: skip
        finally:
            conn.close()

    # the queue

    async def _call(self, fn: Callable[[sqlite3.Connection], T], behind: bool = False) -> T:
        """Run `fn(connection)` in the next batch; returns once that batch is committed.
        The batch goes at the end of this loop turn; when it holds only writes `behind`
        an answer, up to LINGER later, so that more share its transaction."""
        loop = self._loop
        if self._conn is None or self._closing or loop is None:
            raise RuntimeError("SQLiteStore is not open")
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.append(_Job(fn, future))
        if self._flush_at is not None and self._lingering and not behind:
            self._flush_at.cancel()  # someone waits on this one: the batch goes now
            self._flush_at = None
        if self._flush_at is None:
            self._lingering = behind
            self._flush_at = (loop.call_later(LINGER, self._flush) if behind
                              else loop.call_soon(self._flush))  # after this turn's callbacks
        return await future

    def _flush(self) -> None:
        self._flush_at = None
        self._lingering = False
        conn, loop = self._conn, self._loop
        if not self._jobs or conn is None or loop is None:
            return
        jobs, self._jobs = self._jobs[:MAX_BATCH], self._jobs[MAX_BATCH:]
        if self._jobs and not self._closing:
            self._flush_at = loop.call_soon(self._flush)  # the rest in the next turn
        try:
            outcomes = _run_batch(conn, jobs)
        except _Busy as exc:
            now = time.monotonic()
            if self._busy_since is None:
                self._busy_since = now
            if now - self._busy_since < self._busy_timeout:
                self._jobs[:0] = jobs  # ahead of anything queued since: order is kept
                if self._flush_at is not None:
                    self._flush_at.cancel()
                self._flush_at = None
                if not self._closing:
                    self._flush_at = loop.call_later(BUSY_RETRY, self._flush)
                return
            self._busy_since = None
            self._fail(jobs, sqlite3.OperationalError(f"database is locked: {exc}"))
            return
        except BaseException as exc:
            # not a job's own error (those are in outcomes): BEGIN failed (I/O error,
            # corruption) or a job raised a BaseException. Nothing of the batch stays.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._busy_since = None
            if isinstance(exc, Exception):
                if (skipped := _FAILURES.due(f"batch {exc}")) is not None:
                    log.warning("sqlite batch of %d failed: %s%s", len(jobs), exc,
                                f" ({skipped} more since)" if skipped else "")  # fmt: skip
                self._fail(jobs, exc)
                return
            self._fail(jobs, RuntimeError(f"sqlite batch aborted by {exc!r}"))
            raise
        self._busy_since = None
        for future, error, value in outcomes:
            if future.done():  # the caller was cancelled; the write happened anyway
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    @staticmethod
    def _fail(jobs: list[_Job], error: Exception) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)

    # primitives of SQLStore (its _write is _execute: every write is batched here)

    async def _execute(self, sql: str, params: q.Row) -> int:
        with outages_raised():
            return await self._call(lambda conn: conn.execute(sql, params).rowcount)

    async def _write(self, sql: str, params: q.Row, behind: bool = False) -> None:
        with outages_raised():
            await self._call(lambda conn: conn.execute(sql, params), behind)

    async def _write_many(
        self, statements: list[tuple[str, list[q.Row]]], behind: bool = False
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            for sql, rows in statements:
                conn.executemany(sql, rows)

        with outages_raised():
            # one job: a failure rolls back only its own statements
            await self._call(run, behind)

    async def _fetch(self, sql: str, params: q.Row) -> list[q.Row]:
        with outages_raised():
            return await self._read(sql, params)

    async def _read(self, sql: str, params: q.Row) -> list[q.Row]:
        deadline = 0.0
        while True:
            conn = self._conn
            if conn is None or self._closing:
                raise RuntimeError("SQLiteStore is not open")
            try:
                rows = conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                # a lock a read can meet (another process recovering the WAL): tried
                # again shortly, without stalling the loop meanwhile
                now = time.monotonic()
                deadline = deadline or now + self._busy_timeout
                if not _is_busy(exc) or now >= deadline:
                    raise
                log.debug("read met a lock (%s): again in %.3f s", exc, BUSY_RETRY)
                await asyncio.sleep(BUSY_RETRY)
                continue
            # A request's lookups return at once: a yield after each made an INVITE's
            # push wait a loop turn behind all the loop had read meanwhile. Past
            # READS_PER_TURN in one turn they yield: a loop of reads starves nobody.
            self._reads += 1
            if self._reads == 1:
                asyncio.get_running_loop().call_soon(self._turn_over)
            elif self._reads > READS_PER_TURN:
                await asyncio.sleep(0)
            return rows

    def _turn_over(self) -> None:
        self._reads = 0

    async def _insert_returning(self, sql: str, params: q.Row) -> list[q.Row]:
        with outages_raised():
            return await self._call(lambda conn: conn.execute(sql, params).fetchall())


def _close_after(checkpoints: threading.Thread | None, conn: sqlite3.Connection) -> None:
    if checkpoints is not None:
        checkpoints.join()
    conn.close()


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _begin(conn: sqlite3.Connection) -> None:
    # IMMEDIATE takes the write lock up front, so a write can't hit SQLITE_BUSY midway
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise _Busy(str(exc)) from exc
        raise


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
        except _Busy:
            raise  # everything was rolled back: the whole batch is tried again later
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
    third of the statements). None when a job failed: everything was rolled back, to be
    redone job by job. _Busy when the lock is taken."""
    _begin(conn)  # _Busy, or another error for _flush to fail the batch with
    try:
        done: list[_Outcome] = [(job.future, None, job.fn(conn)) for job in jobs]
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")  # never leave the loop's connection mid-transaction
        if not isinstance(exc, Exception):
            raise
        log.debug("batch of %d redone job by job: %s", len(jobs), exc)
        return None
    return done


def _try_batch(
    conn: sqlite3.Connection, jobs: list[_Job]
) -> tuple[list[_Outcome], tuple[int, Exception] | None]:
    _begin(conn)
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


def _check_writable(conn: sqlite3.Connection) -> None:
    """SQLite opens a file it may not write read-only, without a word, and the first
    write fails later (the first REGISTER). Write the header's user_version as it is,
    and roll back: SQLITE_READONLY now, at open, when the file is read-only."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        conn.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _why_not(path: str, exc: sqlite3.Error) -> str:
    """Why the database at `path` could not be opened, and what to do, in one line."""
    folder = os.path.dirname(path) or "."
    fix = "or set [store] url"
    if path == ":memory:":
        return str(exc)
    if not os.path.isdir(folder):
        return f"folder {folder} does not exist (create it, {fix})"
    if os.path.isdir(path):
        return f"{path} is a folder, not a database file (give a file name, {fix})"
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith("SQLITE_READONLY") or (
        os.path.exists(path) and not os.access(path, os.W_OK)
    ):
        return f"{path} is read-only (make it writable for this user, {fix})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"folder {folder} is not writable (SQLite creates the database and its "
            f"-wal and -shm files there: make it writable for this user, {fix})"
        )
    if name == "SQLITE_NOTADB":
        return f"{path} is not an SQLite database ({fix})"
    return f"{path}: {exc}"


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
