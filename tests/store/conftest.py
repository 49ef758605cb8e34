"""Store fixtures: every test taking `backend` or `store` runs on SQLite and on PostgreSQL.

PostgreSQL is the real server on 127.0.0.1:5432 (database `test`, trust auth, user
`postgres` or `root`), or SIPWAKE_TEST_POSTGRES_URL. Each test gets its own schema,
dropped afterwards. An unreachable server fails the tests: CI must provide one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipwake.store import Store
from tests.helpers.stores import Backend, PgAdmin


@pytest.fixture
async def pg_admin() -> AsyncIterator[PgAdmin]:
    admin = await PgAdmin.connect()
    yield admin
    await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        b = Backend("sqlite", f"sqlite:///{tmp_path}/store.db")  # absolute: sqlite:////tmp/…
        yield b
        await b.close_all()
        return
    admin = await PgAdmin.connect()
    await admin.conn.execute(f'CREATE SCHEMA "{admin.schema}"')
    b = Backend("postgresql", f"{admin.url}?schema={admin.schema}")
    try:
        yield b
        await b.close_all()
    finally:
        await admin.close()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()
