"""What the SQLite and PostgreSQL backends share: SQL text, row conversions and
the `Store` methods themselves (`SQLStore`), written once over a few primitives.

Columns are named like the record fields and listed in field order, so a record
maps to a row by position. The queries use `?` placeholders; `Queries.numbered()`
turns them into asyncpg's `$1, $2, …`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sipwake.store.models import Binding, CallRecord, Device, PushAttempt, User

Row = tuple[Any, ...]


def _columns(record: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(record))


USER_COLUMNS = _columns(User)
BINDING_COLUMNS = _columns(Binding)
DEVICE_COLUMNS = _columns(Device)
PUSH_COLUMNS = _columns(PushAttempt)  # the table's `id` column is generated
CALL_COLUMNS = _columns(CallRecord)

# SQLite has no boolean type and hands back 0/1: these fields are converted back.
_DEVICE_BOOLS = tuple(f.name for f in dataclasses.fields(Device) if f.type in ("bool", bool))


def user_row(user: User) -> Row:
    return tuple(getattr(user, c) for c in USER_COLUMNS)


def user_from_row(row: Iterable[Any]) -> User:
    return User(*row)


def binding_row(binding: Binding) -> Row:
    # path is a list of Path header values, kept as JSON text
    return tuple(
        json.dumps(binding.path) if c == "path" else getattr(binding, c) for c in BINDING_COLUMNS
    )


def binding_from_row(row: Iterable[Any]) -> Binding:
    values = dict(zip(BINDING_COLUMNS, row, strict=True))
    values["path"] = json.loads(values["path"])
    return Binding(**values)


def device_row(device: Device) -> Row:
    return tuple(getattr(device, c) for c in DEVICE_COLUMNS)


def device_from_row(row: Iterable[Any]) -> Device:
    values = dict(zip(DEVICE_COLUMNS, row, strict=True))
    for name in _DEVICE_BOOLS:
        values[name] = bool(values[name])
    return Device(**values)


def push_row(attempt: PushAttempt) -> Row:
    return tuple(getattr(attempt, c) for c in PUSH_COLUMNS)


def push_from_row(row: Iterable[Any]) -> PushAttempt:
    return PushAttempt(*row)


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _upsert(table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    """Insert, or replace every non-key column of the row with the same key."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return f"{_insert(table, columns)} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"


def _select(table: str, columns: tuple[str, ...], rest: str) -> str:
    return f"SELECT {', '.join(columns)} FROM {table} {rest}"


@dataclass(frozen=True, slots=True)
class Queries:
    put_user: str = _upsert("users", USER_COLUMNS, ("username", "domain"))
    get_user: str = _select("users", USER_COLUMNS, "WHERE username = ? AND domain = ?")
    delete_user: str = "DELETE FROM users WHERE username = ? AND domain = ?"
    list_users: str = _select("users", USER_COLUMNS, "ORDER BY domain, username")
    list_users_in: str = _select("users", USER_COLUMNS, "WHERE domain = ? ORDER BY username")

    put_binding: str = _upsert("bindings", BINDING_COLUMNS, ("aor", "key"))
    delete_binding: str = "DELETE FROM bindings WHERE aor = ? AND key = ?"
    bindings: str = _select("bindings", BINDING_COLUMNS, "WHERE aor = ? ORDER BY key")
    all_bindings: str = _select("bindings", BINDING_COLUMNS, "ORDER BY aor, key")
    purge_bindings: str = "DELETE FROM bindings WHERE expires_at < ?"

    put_device: str = _upsert("devices", DEVICE_COLUMNS, ("device_id",))
    get_device: str = _select("devices", DEVICE_COLUMNS, "WHERE device_id = ?")
    devices: str = _select("devices", DEVICE_COLUMNS, "WHERE aor = ? ORDER BY device_id")
    delete_device: str = "DELETE FROM devices WHERE device_id = ?"
    # APNs 410 rule: a token uploaded after the provider's timestamp is kept
    disable_device: str = (
        "UPDATE devices SET enabled = ?, disabled_reason = ?, updated_at = ?"
        " WHERE device_id = ? AND token_updated_at <= ?"
    )

    add_push_attempt: str = _insert("push_attempts", PUSH_COLUMNS)
    push_attempts: str = _select(
        "push_attempts", PUSH_COLUMNS, "WHERE device_id = ? ORDER BY at DESC, id DESC LIMIT ?"
    )

    put_call: str = _upsert("call_log", CALL_COLUMNS, ("call_id",))
    calls: str = _select(
        "call_log", CALL_COLUMNS, "WHERE aor = ? ORDER BY started_at DESC LIMIT ?"
    )
    missed_calls: str = _select(
        "call_log", CALL_COLUMNS, "WHERE aor = ? AND missed = ? ORDER BY started_at DESC LIMIT ?"
    )

    schema_versions: str = "SELECT version FROM schema_version ORDER BY version"
    add_schema_version: str = (
        "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)"
    )

    def numbered(self) -> Queries:
        """The same queries with PostgreSQL's numbered placeholders."""
        return Queries(**{f.name: _number(getattr(self, f.name)) for f in dataclasses.fields(self)})


def _number(sql: str) -> str:
    parts = sql.split("?")  # no query here has a literal '?'
    return "".join(f"{p}${i}" for i, p in enumerate(parts[:-1], 1)) + parts[-1]


SQLITE = Queries()
POSTGRES = SQLITE.numbered()


class SQLStore:
    """The `Store` methods over `_execute` and `_fetch`, which each backend provides
    (and `_write`, which a backend may override to batch)."""

    _q: Queries

    async def _execute(self, sql: str, params: Row) -> int:
        """Run one write and return the number of rows it changed, once committed."""
        raise NotImplementedError

    async def _fetch(self, sql: str, params: Row) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    async def _write(self, sql: str, params: Row) -> None:
        """A write whose caller needs no row count; a backend may batch these."""
        await self._execute(sql, params)

    # users

    async def put_user(self, user: User) -> None:
        await self._write(self._q.put_user, user_row(user))

    async def get_user(self, username: str, domain: str) -> User | None:
        rows = await self._fetch(self._q.get_user, (username, domain))
        return user_from_row(rows[0]) if rows else None

    async def delete_user(self, username: str, domain: str) -> bool:
        return await self._execute(self._q.delete_user, (username, domain)) > 0

    async def list_users(self, domain: str | None = None) -> list[User]:
        if domain is None:
            rows = await self._fetch(self._q.list_users, ())
        else:
            rows = await self._fetch(self._q.list_users_in, (domain,))
        return [user_from_row(r) for r in rows]

    # bindings

    async def put_binding(self, binding: Binding) -> None:
        await self._write(self._q.put_binding, binding_row(binding))

    async def delete_binding(self, aor: str, key: str) -> bool:
        return await self._execute(self._q.delete_binding, (aor, key)) > 0

    async def bindings(self, aor: str) -> list[Binding]:
        return [binding_from_row(r) for r in await self._fetch(self._q.bindings, (aor,))]

    async def all_bindings(self) -> list[Binding]:
        return [binding_from_row(r) for r in await self._fetch(self._q.all_bindings, ())]

    async def purge_expired_bindings(self, now: float) -> int:
        return await self._execute(self._q.purge_bindings, (now,))

    # devices

    async def put_device(self, device: Device) -> None:
        await self._write(self._q.put_device, device_row(device))

    async def get_device(self, device_id: str) -> Device | None:
        rows = await self._fetch(self._q.get_device, (device_id,))
        return device_from_row(rows[0]) if rows else None

    async def devices(self, aor: str) -> list[Device]:
        return [device_from_row(r) for r in await self._fetch(self._q.devices, (aor,))]

    async def delete_device(self, device_id: str) -> bool:
        return await self._execute(self._q.delete_device, (device_id,)) > 0

    async def disable_device(self, device_id: str, reason: str, token_at: float) -> bool:
        params = (False, reason, time.time(), device_id, token_at)
        return await self._execute(self._q.disable_device, params) > 0

    # push log

    async def add_push_attempt(self, attempt: PushAttempt) -> None:
        await self._write(self._q.add_push_attempt, push_row(attempt))

    async def push_attempts(self, device_id: str, limit: int = 100) -> list[PushAttempt]:
        rows = await self._fetch(self._q.push_attempts, (device_id, limit))
        return [push_from_row(r) for r in rows]

    # call log

    async def put_call(self, record: CallRecord) -> None:
        await self._write(self._q.put_call, tuple(getattr(record, c) for c in CALL_COLUMNS))

    async def calls(
        self, aor: str, missed_only: bool = False, limit: int = 100
    ) -> list[CallRecord]:
        if missed_only:
            rows = await self._fetch(self._q.missed_calls, (aor, True, limit))
        else:
            rows = await self._fetch(self._q.calls, (aor, limit))
        records = [CallRecord(*r) for r in rows]
        for r in records:  # SQLite hands booleans back as 0/1
            r.answered, r.missed = bool(r.answered), bool(r.missed)
        return records

    # schema (not part of `Store`: for health checks and tests)

    async def applied_migrations(self) -> list[int]:
        return [r[0] for r in await self._fetch(self._q.schema_versions, ())]
