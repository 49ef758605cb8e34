"""The databases store tests run on: a `Backend` (SQLite file or PostgreSQL schema)
that opens stores, and `PgAdmin`, a connection to the real PostgreSQL on 127.0.0.1:5432
(or SIPWAKE_TEST_POSTGRES_URL) with a fresh schema. The fixtures are in
tests/store/conftest.py."""

from __future__ import annotations

import os
import uuid

import asyncpg  # type: ignore[import-untyped]
import pytest

from sipwake.store import Store, open_store

_PG_URLS = (
    [os.environ["SIPWAKE_TEST_POSTGRES_URL"]]
    if os.environ.get("SIPWAKE_TEST_POSTGRES_URL")
    else [
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgresql://root@127.0.0.1:5432/test",
    ]
)


class Backend:
    """One database for one test; `open()` gives a new store on it (e.g. a restart)."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.stores: list[Store] = []

    async def open(self) -> Store:
        store = await open_store(self.url)
        self.stores.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.stores:
            await store.close()


class PgAdmin:
    """A connection to the test database, and a fresh schema name that it drops at the end."""

    def __init__(self, conn: asyncpg.Connection, url: str) -> None:
        self.conn = conn
        self.url = url
        self.schema = f"test_{uuid.uuid4().hex}"

    @classmethod
    async def connect(cls) -> PgAdmin:
        errors = []
        for url in _PG_URLS:
            try:
                return cls(await asyncpg.connect(url, timeout=5), url)
            except (OSError, asyncpg.PostgresError) as exc:
                errors.append(f"{url}: {exc!r}")
        pytest.fail("PostgreSQL is not reachable (CI must start it):\n" + "\n".join(errors))

    async def close(self) -> None:
        await self.conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        await self.conn.close()
