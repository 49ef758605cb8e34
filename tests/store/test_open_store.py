"""Store URLs → backends (`[store] url`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sipwake.store import StoreOpenError, User, create_store, display_url, open_store
from sipwake.store.postgres import PostgresStore
from sipwake.store.sqlite import SQLiteStore
from tests.helpers.readonly import read_only

if TYPE_CHECKING:
    from tests.helpers.stores import PgAdmin


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


# --- stores that can't be opened say why, in one line -----------------------------------


async def open_error(url: str) -> str:
    with pytest.raises(StoreOpenError) as exc:
        await open_store(url)
    message = str(exc.value)
    assert "\n" not in message
    return message


async def test_sqlite_missing_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    assert await open_error(url) == (
        f"cannot open store {url}: folder {tmp_path}/no/such/dir does not exist "
        "(create it, or set [store] url)"
    )


async def test_sqlite_folder_given_as_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}"
    assert await open_error(url) == (
        f"cannot open store {url}: {tmp_path} is a folder, not a database file "
        "(give a file name, or set [store] url)"
    )


async def test_sqlite_file_that_is_no_database(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("shopping list\n" * 200)
    url = f"sqlite:///{tmp_path}/notes.txt"
    assert await open_error(url) == (
        f"cannot open store {url}: {tmp_path}/notes.txt is not an SQLite database "
        "(or set [store] url)"
    )


async def test_sqlite_read_only_file_fails_at_open_not_at_the_first_write(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = await open_store(url)
    await store.put_user(User("a", "d", "m", "s"))
    await store.close()
    with read_only(tmp_path / "s.db"):
        assert await open_error(url) == (
            f"cannot open store {url}: {tmp_path}/s.db is read-only "
            "(make it writable for this user, or set [store] url)"
        )


async def test_sqlite_folder_not_writable(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    url = f"sqlite:///{folder}/s.db"
    with read_only(folder):
        message = await open_error(url)
    assert message.startswith(f"cannot open store {url}: folder {folder} is not writable")


async def test_postgres_missing_database(pg_admin: PgAdmin) -> None:
    url = pg_admin.url.rsplit("/", 1)[0] + "/sipwake_does_not_exist"
    message = await open_error(url)
    assert message.startswith(f"cannot open store {url}: database 'sipwake_does_not_exist' ")
    assert message.endswith("(createdb sipwake_does_not_exist, or set [store] url)")


async def test_postgres_nobody_listening_and_password_hidden() -> None:
    message = await open_error("postgresql://sip:hunter2@127.0.0.1:1/sipwake")
    assert message.startswith(
        "cannot open store postgresql://sip:***@127.0.0.1:1/sipwake: "
        "no PostgreSQL server at 127.0.0.1:1: "
    )
    assert message.endswith("(start it, or set [store] url)") and "hunter2" not in message


def test_display_url_hides_passwords() -> None:
    assert display_url("postgresql://u:p%40ss@h:5/db?schema=x") == "postgresql://u:***@h:5/db?schema=x"
    assert display_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert display_url("sqlite:///x.db") == "sqlite:///x.db"
    assert display_url("sqlite://:memory:") == "sqlite://:memory:"
