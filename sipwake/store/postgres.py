"""PostgreSQL backend on an asyncpg pool.

Group commit, as in the SQLite backend: the inserts and upserts (put_*, the push
log) are queued, and one flusher task commits everything queued in one transaction
(one `executemany` per statement), then resolves the callers. A commit costs a WAL
flush, so one per REGISTER would cap throughput at the disk's flush rate. A failed
batch is retried in halves until only the bad write fails. Writes that report a row
count (delete_*, disable_device, purge) and reads run directly on the pool. Either
way an await returns only after the commit.

`schema` puts every table in that schema (created if missing) through the
connections' search_path; tests use it to isolate themselves.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]

from sipwake.lograte import LogRate
from sipwake.store import StoreOpenError, migrations
from sipwake.store import sql as q
from sipwake.store.errors import outages_raised, unavailable

log = logging.getLogger(__name__)

# Serializes migrations when several nodes start at once (any fixed 64-bit number).
_MIGRATION_LOCK = 0x73697077616B65  # "sipwake"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_Write = tuple[str, q.Row, "asyncio.Future[None]"]
CONNECT_TIMEOUT = 5.0  # seconds to open a connection
COMMAND_TIMEOUT = 10.0  # seconds a statement may take


class _PoolNoise(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to reconnect while the server
    is down: one line a minute, no traceback (our own lines say what failed)."""

    def __init__(self) -> None:
        super().__init__()
        self.rate = LogRate(60.0)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and not record.exc_info:
            return True
        if self.rate.due(record.getMessage()[:80]) is None:
            return False
        record.exc_info = None
        record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_PoolNoise())


class PostgresStore(q.SQLStore):
    _q = q.POSTGRES

    def __init__(
        self, dsn: str, *, schema: str | None = None, min_size: int = 1, max_size: int = 10
    ):
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"invalid schema name {schema!r}: use [a-z_][a-z0-9_]*")
        self.dsn = dsn
        self.schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None  # asyncpg.Pool
        self._queued: list[_Write] = []
        self._flusher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._pool is not None:
            raise RuntimeError("PostgresStore is already open")
        settings = {"search_path": f'"{self.schema}"'} if self.schema else None
        try:
            # bounded waits: a server that stops answering fails requests (503), it
            # never holds them
            pool = await asyncpg.create_pool(
                self.dsn, min_size=self._min_size, max_size=self._max_size,
                server_settings=settings, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
            )  # fmt: skip
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreOpenError(_why_not(self.dsn, exc)) from exc
        try:
            await self._migrate(pool)
        except asyncpg.PostgresError as exc:
            await pool.close()
            raise StoreOpenError(_why_not(self.dsn, exc)) from exc
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._flusher is not None:
            await self._flusher  # commits what was queued before close (its own pool reference)
        await pool.close()

    async def _migrate(self, pool: Any) -> None:
        """Apply pending migrations in one transaction (all or none)."""
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if self.schema and not await self._schema_exists(conn):
                await conn.execute(f'CREATE SCHEMA "{self.schema}"')
            await conn.execute(migrations.render(migrations.SCHEMA_VERSION_TABLE, "postgresql"))
            rows = await conn.fetch("SELECT version FROM schema_version")
            applied = [row[0] for row in rows]
            for migration, statements in migrations.pending(applied, "postgresql"):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    q.POSTGRES.add_schema_version, migration.version, migration.name, time.time()
                )
                log.info("postgresql schema migrated to version %d", migration.version)

    async def _schema_exists(self, conn: Any) -> bool:
        # asked first: even CREATE SCHEMA IF NOT EXISTS needs CREATE on the database
        sql = "SELECT 1 FROM pg_namespace WHERE nspname = $1"
        return await conn.fetchval(sql, self.schema) is not None

    @property
    def _db(self) -> Any:
        if self._pool is None:
            raise RuntimeError("PostgresStore is not open")
        return self._pool

    # the two primitives of SQLStore

    async def _execute(self, sql: str, params: q.Row) -> int:
        with outages_raised():
            status: str = await self._db.execute(sql, *params)  # e.g. "DELETE 3"
        return int(status.rsplit(" ", 1)[-1])

    async def _fetch(self, sql: str, params: q.Row) -> list[Any]:
        with outages_raised():
            rows: list[Any] = await self._db.fetch(sql, *params)
        return rows

    async def _write_many(
        self, statements: list[tuple[str, list[q.Row]]], behind: bool = False
    ) -> None:
        with outages_raised():
            async with self._db.acquire() as conn, conn.transaction():
                for sql, rows in statements:
                    await conn.executemany(sql, rows)

    async def _write(self, sql: str, params: q.Row, behind: bool = False) -> None:
        if self._pool is None:
            raise RuntimeError("PostgresStore is not open")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((sql, params, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_queued(self._pool))
        with outages_raised():
            await future

    async def _flush_queued(self, pool: Any) -> None:
        """Commit batches while writes keep coming; each batch is what queued meanwhile."""
        batch: list[_Write] = []
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                await self._commit(pool, batch)
        except asyncio.CancelledError:  # loop shutting down: nobody may wait forever
            for _, _, future in batch + self._queued:
                future.cancel()
            self._queued = []
            raise
        finally:
            self._flusher = None

    async def _commit(self, pool: Any, batch: list[_Write]) -> None:
        by_sql: dict[str, list[q.Row]] = {}
        for sql, params, _ in batch:
            by_sql.setdefault(sql, []).append(params)  # keeps each statement's order
        try:
            async with pool.acquire() as conn, conn.transaction():
                for sql, rows in by_sql.items():
                    await conn.executemany(sql, rows)
        except Exception as exc:
            if unavailable(exc) is not None:  # the server, not a write: all fail alike
                _settle(batch, exc)
                return
            if len(batch) > 1:  # find the bad write by halves: the others commit, in order
                half = len(batch) // 2
                await self._commit(pool, batch[:half])
                await self._commit(pool, batch[half:])
                return
            _settle(batch, exc)
        else:
            _settle(batch, None)


def _why_not(dsn: str, exc: Exception) -> str:
    """Why PostgreSQL at `dsn` could not be opened, and what to do, in one line."""
    parts = urlsplit(dsn)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    database = parts.path.lstrip("/") or parts.username or "?"
    fix = "or set [store] url"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"database {database!r} does not exist on {where} (createdb {database}, {fix})"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):  # or InvalidPassword
        return f"{exc} (check the user and password, or the server's pg_hba.conf, {fix})"
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return f"{exc} (sipwake creates its tables at start: grant the user CREATE, {fix})"
    if isinstance(exc, TimeoutError):
        return f"no answer from a PostgreSQL server at {where} ({fix})"
    if isinstance(exc, OSError):
        why = exc.strerror or str(exc) or type(exc).__name__
        return f"no PostgreSQL server at {where}: {why} (start it, {fix})"
    return f"{exc} ({fix})"


def _settle(batch: list[_Write], exc: Exception | None) -> None:
    for _, _, future in batch:
        if future.done():  # the caller was cancelled
            continue
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)
