"""Persistence behind one interface (`Store`): SQLite by default, or PostgreSQL.

`await open_store(url)` returns a store that is already open (connected, schema
migrated); the caller only has to `await store.close()` at shutdown.
`create_store(url)` builds the same store without opening it.

URLs (`[store] url`):
    sqlite:///relative.db        relative to the working directory (load_config has
                                 already made one from a config file absolute,
                                 against the file's folder)
    sqlite:////absolute/path.db
    sqlite://:memory:            one private in-memory database (tests)
    postgresql://user@host:port/db[?schema=name]   (`postgres://` too)

`schema` puts sipwake's tables in that PostgreSQL schema (created if missing);
other query parameters go to asyncpg (e.g. `sslmode`).

A store that cannot be opened (no such folder or database, a read-only file, no
server listening, ...) raises StoreOpenError, whose message says in one line what
is wrong and what to do; the command line prints it instead of a traceback.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from sipwake.store.base import Store
from sipwake.store.models import Binding, Device, PushAttempt, User

__all__ = [
    "Binding",
    "Device",
    "PushAttempt",
    "Store",
    "StoreOpenError",
    "User",
    "create_store",
    "display_url",
    "open_store",
]


class StoreOpenError(Exception):
    """The store could not be opened. `reason` is worded for the operator: what is
    wrong and how to fix it; `url` (password hidden) is filled in by open_store."""

    def __init__(self, reason: str, url: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.url = url

    def __str__(self) -> str:
        return f"cannot open store {self.url}: {self.reason}" if self.url else self.reason


async def open_store(url: str) -> Store:
    """The store for `url`, opened: connected and migrated. Raises ValueError for a
    bad URL, StoreOpenError when the database can't be opened or created."""
    store = create_store(url)
    try:
        await store.open()
    except StoreOpenError as exc:
        exc.url = display_url(url)
        raise
    return store


def display_url(url: str) -> str:
    """`url` with any password replaced by ***, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def create_store(url: str) -> Store:
    """The store for `url`, not yet opened. Raises ValueError for a bad URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"store URL {url!r} has no scheme: use sqlite:///FILE or postgresql://…")
    # backends are imported on use: importing the records needs neither driver
    scheme = scheme.lower()
    if scheme == "sqlite":
        from sipwake.store.sqlite import SQLiteStore

        return SQLiteStore(_sqlite_path(url, rest))
    if scheme in ("postgresql", "postgres"):
        from sipwake.store.postgres import PostgresStore

        dsn, schema = _postgres_dsn(url)
        return PostgresStore(dsn, schema=schema)
    raise ValueError(
        f"unsupported store URL scheme {scheme!r} in {url!r}: use sqlite:// or postgresql://"
    )


def _sqlite_path(url: str, rest: str) -> str:
    if "?" in rest or "#" in rest:
        raise ValueError(f"sqlite store URL {url!r} takes no query or fragment")
    if rest == ":memory:":
        return rest
    # sqlite:///x.db leaves "/x.db" (relative), sqlite:////x.db leaves "//x.db" (absolute)
    if not rest.startswith("/") or rest == "/":
        raise ValueError(
            f"bad sqlite store URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db"
        )
    return os.path.abspath(unquote(rest[1:]))


def _postgres_dsn(url: str) -> tuple[str, str | None]:
    """The DSN for asyncpg, and the `schema` parameter taken out of it."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in params if name == "schema"]
    if len(schemas) > 1 or (schemas and not schemas[0]):
        raise ValueError(f"store URL {url!r}: give one non-empty schema")
    query = urlencode([(name, value) for name, value in params if name != "schema"])
    return urlunsplit(parts._replace(query=query)), (schemas[0] if schemas else None)
