"""Store URLs → backends (`[store] url`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sipwake.store import User, create_store, open_store
from sipwake.store.postgres import PostgresStore
from sipwake.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from tests.store.conftest import PgAdmin


def test_sqlite_relative_path_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = create_store("sqlite:///data/sip%20wake.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == os.path.join(tmp_path, "data", "sip wake.db")


def test_sqlite_absolute_path_and_memory() -> None:
    store = create_store("sqlite:////var/lib/sipwake/sipwake.db")
    assert isinstance(store, SQLiteStore) and store.path == "/var/lib/sipwake/sipwake.db"
    store = create_store("sqlite://:memory:")
    assert isinstance(store, SQLiteStore) and store.path == ":memory:"


def test_postgres_urls() -> None:
    store = create_store("postgresql://sip@db.example:5433/sipwake?schema=edge1&sslmode=require")
    assert isinstance(store, PostgresStore)
    assert store.dsn == "postgresql://sip@db.example:5433/sipwake?sslmode=require"
    assert store.schema == "edge1"
    store = create_store("postgres://sip@db/sipwake")
    assert isinstance(store, PostgresStore)
    assert store.dsn == "postgres://sip@db/sipwake" and store.schema is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/db", "unsupported store URL scheme 'mysql'"),
        ("sipwake.db", "no scheme"),
        ("sqlite://host/file.db", "bad sqlite store URL"),
        ("sqlite:///", "bad sqlite store URL"),
        ("sqlite:///x.db?mode=ro", "takes no query"),
        ("postgresql://db/x?schema=", "non-empty schema"),
        ("postgresql://db/x?schema=a;drop", "invalid schema name"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_store(url)


async def test_open_store_returns_an_open_store(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/s.db")
    try:
        await store.put_user(User("a", "d", "m", "s"))
        assert await store.get_user("a", "d") is not None
    finally:
        await store.close()


async def test_postgres_schema_is_created_when_missing(pg_admin: PgAdmin) -> None:
    store = await open_store(f"{pg_admin.url}?schema={pg_admin.schema}")
    try:
        await store.put_user(User("a", "d", "m", "s"))
    finally:
        await store.close()
    tables = await pg_admin.conn.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", pg_admin.schema
    )
    assert {"users", "bindings", "devices", "push_attempts", "schema_version"} <= {
        t["table_name"] for t in tables
    }
    assert await pg_admin.conn.fetchval(f'SELECT count(*) FROM "{pg_admin.schema}".users') == 1
