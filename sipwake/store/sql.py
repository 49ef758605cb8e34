"""What the SQLite and PostgreSQL backends share: SQL text, row conversions and
the `Store` methods themselves (`SQLStore`), written once over a few primitives.

Columns are named like the record fields and listed in field order, so a record
maps to a row by position. The queries use `?` placeholders; `Queries.numbered()`
turns them into asyncpg's `$1, $2, …`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sipwake.store.models import (
    Binding,
    CallRecord,
    Device,
    InboxMessage,
    Mailbox,
    OutboxPush,
    PushAttempt,
    User,
)

Row = tuple[Any, ...]


def _columns(record: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(record))


USER_COLUMNS = _columns(User)
BINDING_COLUMNS = tuple(c for c in _columns(Binding) if c != "stored_until")  # memory only
DEVICE_COLUMNS = _columns(Device)
PUSH_COLUMNS = _columns(PushAttempt)  # the table's `id` column is generated
CALL_COLUMNS = _columns(CallRecord)
MAILBOX_COLUMNS = _columns(Mailbox)
OUTBOX_COLUMNS = _columns(OutboxPush)

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
    values["path"] = tuple(json.loads(values["path"]))
    return Binding(**values, stored_until=values["expires_at"])


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


INBOX_COLUMNS = _columns(InboxMessage)  # `id` first: assigned by the database
# PostgreSQL column types, for the casts in Queries.add_message_locked
_INBOX_PG_TYPES = {
    "aor": "text", "dedup_key": "text", "from_uri": "text", "from_name": "text",
    "content_type": "text", "body": "bytea", "content_encoding": "text", "imdn_id": "text",
    "silent": "boolean",
    "received_at": "double precision", "delivered_at": "double precision",
    "acked_at": "double precision",
}  # fmt: skip


def inbox_row(message: InboxMessage) -> Row:
    """The row to insert (without `id`)."""
    return tuple(getattr(message, c) for c in INBOX_COLUMNS[1:])


def inbox_from_row(row: Iterable[Any]) -> InboxMessage:
    values = dict(zip(INBOX_COLUMNS, row, strict=True))
    values["body"] = bytes(values["body"])  # SQLite and asyncpg both give bytes; be sure
    values["silent"] = bool(values["silent"])  # SQLite: 0/1
    return InboxMessage(**values)


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
    user_changes: str = (
        "SELECT seq, username, domain FROM user_changes WHERE seq > ? ORDER BY seq LIMIT ?"
    )
    last_user_change: str = "SELECT coalesce(max(seq), 0) FROM user_changes"
    trim_user_changes: str = "DELETE FROM user_changes WHERE seq <= ?"

    put_binding: str = _upsert("bindings", BINDING_COLUMNS, ("aor", "key"))
    delete_binding: str = "DELETE FROM bindings WHERE aor = ? AND key = ?"
    bindings: str = _select("bindings", BINDING_COLUMNS, "WHERE aor = ? ORDER BY key")
    all_bindings: str = _select("bindings", BINDING_COLUMNS, "ORDER BY aor, key")
    purge_bindings: str = "DELETE FROM bindings WHERE expires_at < ?"

    put_device: str = _upsert("devices", DEVICE_COLUMNS, ("device_id",))
    get_device: str = _select("devices", DEVICE_COLUMNS, "WHERE device_id = ?")
    devices: str = _select("devices", DEVICE_COLUMNS, "WHERE aor = ? ORDER BY device_id")
    some_devices: str = _select("devices", DEVICE_COLUMNS, "LIMIT ?")
    delete_device: str = "DELETE FROM devices WHERE device_id = ?"
    device_counts: str = (
        "SELECT platform, enabled, count(*) FROM devices GROUP BY platform, enabled"
    )
    # the prefixes match the token indexes (migration 4); the whole token decides
    devices_with_token: str = _select(
        "devices",
        DEVICE_COLUMNS,
        "WHERE (substr(push_token, 1, 64) = ? AND push_token = ?)"
        " OR (substr(voip_token, 1, 64) = ? AND voip_token = ?) ORDER BY device_id",
    )
    # APNs 410 rule: a token uploaded after the provider's timestamp is kept
    disable_device: str = (
        "UPDATE devices SET enabled = ?, disabled_reason = ?, updated_at = ?"
        " WHERE device_id = ? AND token_updated_at <= ?"
    )

    add_push_attempt: str = _insert("push_attempts", PUSH_COLUMNS)
    push_attempts: str = _select(
        "push_attempts", PUSH_COLUMNS, "WHERE device_id = ? ORDER BY at DESC, id DESC LIMIT ?"
    )

    # push outbox: a push is stored once (a resumed one keeps its row) and deleted when done
    add_outbox_push: str = (
        _insert("push_outbox", OUTBOX_COLUMNS) + " ON CONFLICT (push_id) DO NOTHING"
    )
    delete_outbox_push: str = "DELETE FROM push_outbox WHERE push_id = ?"
    outbox_pushes: str = _select(
        "push_outbox", OUTBOX_COLUMNS, "WHERE node = ? ORDER BY created_at, push_id"
    )
    outbox_nodes: str = "SELECT DISTINCT node FROM push_outbox"
    adopt_outbox: str = "UPDATE push_outbox SET node = ? WHERE node = ?"

    put_call: str = _upsert("call_log", CALL_COLUMNS, ("call_id",))
    calls: str = _select(
        "call_log", CALL_COLUMNS, "WHERE aor = ? ORDER BY started_at DESC LIMIT ?"
    )
    missed_calls: str = _select(
        "call_log", CALL_COLUMNS, "WHERE aor = ? AND missed = ? ORDER BY started_at DESC LIMIT ?"
    )

    put_mailbox: str = _upsert("mailboxes", MAILBOX_COLUMNS, ("aor",))

    revoke_token: str = (
        "INSERT INTO revoked_tokens (token_id, expires_at) VALUES (?, ?)"
        " ON CONFLICT (token_id) DO NOTHING"
    )
    token_revoked: str = "SELECT 1 FROM revoked_tokens WHERE token_id = ?"
    # retention: oldest rows first, a bounded number per statement
    purge_revoked_tokens: str = "DELETE FROM revoked_tokens WHERE expires_at < ?"
    purge_calls: str = (
        "DELETE FROM call_log WHERE call_id IN (SELECT call_id FROM call_log"
        " WHERE started_at < ? ORDER BY started_at LIMIT ?)"
    )
    purge_push_attempts: str = (
        "DELETE FROM push_attempts WHERE id IN (SELECT id FROM push_attempts"
        " WHERE at < ? ORDER BY at LIMIT ?)"
    )
    get_mailbox: str = _select("mailboxes", MAILBOX_COLUMNS, "WHERE aor = ?")

    # inbox (the columns after `id`, which the database assigns)
    add_message: str = (
        _insert("inbox", INBOX_COLUMNS[1:])
        + " ON CONFLICT (aor, dedup_key) DO NOTHING RETURNING id"
    )
    # PostgreSQL: ids come from a sequence when the row is inserted, but rows become
    # visible when they commit, which may be in another order. A transaction-scoped
    # lock per recipient makes one user's inserts commit in id order, so a reader
    # paging with `after=<id>` never passes a row that is still to appear.
    add_message_locked: str = (
        f"INSERT INTO inbox ({', '.join(INBOX_COLUMNS[1:])}) SELECT "
        + ", ".join(f"?::{_INBOX_PG_TYPES[c]}" for c in INBOX_COLUMNS[1:])
        + " FROM (SELECT pg_advisory_xact_lock(1936289911, hashtext(?::text))) AS serialized"
        + " ON CONFLICT (aor, dedup_key) DO NOTHING RETURNING id"
    )
    message_by_key: str = _select("inbox", INBOX_COLUMNS, "WHERE aor = ? AND dedup_key = ?")
    messages: str = _select("inbox", INBOX_COLUMNS, "WHERE aor = ? AND id > ? ORDER BY id LIMIT ?")
    undelivered_messages: str = _select(
        "inbox m",
        INBOX_COLUMNS,
        "WHERE m.aor = ? AND m.id > ? AND m.acked_at = 0 AND NOT EXISTS"
        " (SELECT 1 FROM inbox_deliveries d WHERE d.message_id = m.id AND d.device = ?)"
        " ORDER BY m.id LIMIT ?",
    )
    add_delivery: str = (
        "INSERT INTO inbox_deliveries (message_id, device, delivered_at) VALUES (?, ?, ?)"
        " ON CONFLICT (message_id, device) DO NOTHING"
    )
    set_delivered: str = "UPDATE inbox SET delivered_at = ? WHERE id = ? AND delivered_at = 0"
    message_ids_between: str = (
        "SELECT id FROM inbox WHERE aor = ? AND id >= ? AND id <= ? ORDER BY id"
    )
    set_acked: str = "UPDATE inbox SET acked_at = ? WHERE id = ? AND acked_at = 0"
    unread_count: str = (
        "SELECT count(*) FROM inbox WHERE aor = ? AND delivered_at = 0 AND silent = ?"
    )
    count_messages: str = "SELECT count(*) FROM inbox WHERE aor = ?"
    inbox_aors: str = "SELECT DISTINCT aor FROM inbox"
    delivery_cursor: str = "SELECT last_id FROM inbox_cursors WHERE aor = ? AND device = ?"
    advance_cursor: str = (
        "INSERT INTO inbox_cursors (aor, device, last_id) VALUES (?, ?, ?)"
        " ON CONFLICT (aor, device) DO UPDATE SET last_id = excluded.last_id"
        " WHERE inbox_cursors.last_id < excluded.last_id"
    )
    # Deliveries go first, in the same order and limit as their messages, so that a
    # crash between the two statements leaves no orphan rows.
    trim_deliveries: str = (
        "DELETE FROM inbox_deliveries WHERE message_id IN (SELECT id FROM inbox"
        " WHERE aor = ? AND delivered_at > 0 ORDER BY id LIMIT ?)"
    )
    trim_messages: str = (
        "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox"
        " WHERE aor = ? AND delivered_at > 0 ORDER BY id LIMIT ?)"
    )
    purge_deliveries: str = (
        "DELETE FROM inbox_deliveries WHERE message_id IN (SELECT id FROM inbox"
        " WHERE received_at < ? ORDER BY received_at, id LIMIT ?)"
    )
    purge_messages: str = (
        "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox"
        " WHERE received_at < ? ORDER BY received_at, id LIMIT ?)"
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

    async def _write(self, sql: str, params: Row, behind: bool = False) -> None:
        """A write whose caller needs no row count; a backend may batch these. One
        `behind` an answer already given (a push-log row, a binding after its 200) may
        also wait a moment for others to share its transaction."""
        await self._execute(sql, params)

    # users

    async def put_user(self, user: User) -> None:
        await self._write(self._q.put_user, user_row(user))

    async def put_users(self, users: Sequence[User]) -> None:
        if users:
            await self._write_many([(self._q.put_user, [user_row(u) for u in users])])

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

    async def user_changes(self, after: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        rows = await self._fetch(self._q.user_changes, (after, limit))
        return [(int(seq), str(username), str(domain)) for seq, username, domain in rows]

    async def last_user_change(self) -> int:
        rows = await self._fetch(self._q.last_user_change, ())
        return int(rows[0][0]) if rows else 0

    async def trim_user_changes(self, upto: int) -> int:
        return await self._execute(self._q.trim_user_changes, (upto,))

    # bindings

    async def put_binding(self, binding: Binding) -> None:
        await self._write(self._q.put_binding, binding_row(binding))

    async def delete_binding(self, aor: str, key: str) -> bool:
        return await self._execute(self._q.delete_binding, (aor, key)) > 0

    async def write_bindings(self, put: list[Binding], delete: list[tuple[str, str]]) -> None:
        statements = [(self._q.put_binding, [binding_row(b) for b in put])] if put else []
        if delete:
            statements.append((self._q.delete_binding, list(delete)))
        if statements:
            await self._write_many(statements, behind=True)

    async def _write_many(
        self, statements: list[tuple[str, list[Row]]], behind: bool = False
    ) -> None:
        """Each statement run for each of its rows, all in one transaction (`behind`:
        as for `_write`)."""
        raise NotImplementedError

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

    async def some_devices(self, limit: int) -> list[Device]:
        return [device_from_row(r) for r in await self._fetch(self._q.some_devices, (limit,))]

    async def devices(self, aor: str) -> list[Device]:
        return [device_from_row(r) for r in await self._fetch(self._q.devices, (aor,))]

    async def delete_device(self, device_id: str) -> bool:
        return await self._execute(self._q.delete_device, (device_id,)) > 0

    async def device_counts(self) -> dict[tuple[str, bool], int]:
        rows = await self._fetch(self._q.device_counts, ())
        return {(str(platform), bool(enabled)): int(n) for platform, enabled, n in rows}

    async def devices_with_token(self, token: str) -> list[Device]:
        prefix = token[:64]
        rows = await self._fetch(self._q.devices_with_token, (prefix, token, prefix, token))
        return [device_from_row(r) for r in rows]

    async def disable_device(self, device_id: str, reason: str, token_at: float) -> bool:
        params = (False, reason, time.time(), device_id, token_at)
        return await self._execute(self._q.disable_device, params) > 0

    # push log

    async def add_push_attempt(self, attempt: PushAttempt) -> None:
        await self._write(self._q.add_push_attempt, push_row(attempt), behind=True)

    async def push_attempts(self, device_id: str, limit: int = 100) -> list[PushAttempt]:
        rows = await self._fetch(self._q.push_attempts, (device_id, limit))
        return [push_from_row(r) for r in rows]

    # push outbox

    async def add_outbox_push(self, push: OutboxPush) -> None:
        await self._write(self._q.add_outbox_push, tuple(getattr(push, c) for c in OUTBOX_COLUMNS))

    async def delete_outbox_push(self, push_id: str) -> None:
        await self._write(self._q.delete_outbox_push, (push_id,))

    async def outbox_pushes(self, node: str = "") -> list[OutboxPush]:
        return [OutboxPush(*r) for r in await self._fetch(self._q.outbox_pushes, (node,))]

    async def outbox_nodes(self) -> list[str]:
        return [str(r[0]) for r in await self._fetch(self._q.outbox_nodes, ())]

    async def adopt_outbox(self, node: str, from_node: str) -> int:
        """Make `from_node`'s outbox rows `node`'s; how many moved (0 when another node
        took them first: one UPDATE, so only one node gets each row)."""
        return await self._execute(self._q.adopt_outbox, (node, from_node))

    # call log

    async def put_call(self, record: CallRecord) -> None:
        await self._write(self._q.put_call, tuple(getattr(record, c) for c in CALL_COLUMNS))

    async def put_calls(self, records: Sequence[CallRecord]) -> None:
        if records:
            rows = [tuple(getattr(r, c) for c in CALL_COLUMNS) for r in records]
            await self._write_many([(self._q.put_call, rows)], behind=True)

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

    # voicemail

    async def put_mailbox(self, mailbox: Mailbox) -> None:
        await self._write(self._q.put_mailbox, tuple(getattr(mailbox, c) for c in MAILBOX_COLUMNS))

    async def get_mailbox(self, aor: str) -> Mailbox | None:
        rows = await self._fetch(self._q.get_mailbox, (aor,))
        if not rows:
            return None
        mailbox = Mailbox(*rows[0])
        mailbox.waiting = bool(mailbox.waiting)  # SQLite hands booleans back as 0/1
        return mailbox

    # API tokens and retention

    async def revoke_token(self, token_id: str, expires_at: float) -> None:
        await self._execute(self._q.revoke_token, (token_id, expires_at))

    async def token_revoked(self, token_id: str) -> bool:
        return bool(await self._fetch(self._q.token_revoked, (token_id,)))

    async def purge_revoked_tokens(self, now: float) -> int:
        return await self._execute(self._q.purge_revoked_tokens, (now,))

    async def purge_calls(self, before: float, limit: int = 1000) -> int:
        return await self._execute(self._q.purge_calls, (before, limit))

    async def purge_push_attempts(self, before: float, limit: int = 1000) -> int:
        return await self._execute(self._q.purge_push_attempts, (before, limit))

    # inbox

    async def _insert_returning(self, sql: str, params: Row) -> Sequence[Sequence[Any]]:
        """A write that returns rows (INSERT … RETURNING), once committed. PostgreSQL
        runs it like a read (autocommit); SQLite must flag it as a write."""
        return await self._fetch(sql, params)

    async def add_message(self, message: InboxMessage) -> tuple[InboxMessage, bool]:
        row = inbox_row(message)
        if self._q is POSTGRES:
            rows = await self._insert_returning(self._q.add_message_locked, (*row, message.aor))
        else:
            rows = await self._insert_returning(self._q.add_message, row)
        if rows:
            return dataclasses.replace(message, id=int(rows[0][0])), True
        existing = await self._fetch(self._q.message_by_key, (message.aor, message.dedup_key))
        if not existing:  # deleted (purge) between the two statements: store it again
            return await self.add_message(message)
        return inbox_from_row(existing[0]), False

    async def messages(self, aor: str, after: int = 0, limit: int = 100) -> list[InboxMessage]:
        rows = await self._fetch(self._q.messages, (aor, after, limit))
        return [inbox_from_row(r) for r in rows]

    async def undelivered_messages(
        self, aor: str, device: str, after: int = 0, limit: int = 100
    ) -> list[InboxMessage]:
        rows = await self._fetch(self._q.undelivered_messages, (aor, after, device, limit))
        return [inbox_from_row(r) for r in rows]

    async def mark_delivered(self, message_id: int, device: str, at: float) -> None:
        await asyncio.gather(
            self._write(self._q.add_delivery, (message_id, device, at)),
            self._write(self._q.set_delivered, (at, message_id)),
        )

    async def ack_messages(self, aor: str, ids: Sequence[int], at: float) -> list[int]:
        if not ids:
            return []
        rows = await self._fetch(self._q.message_ids_between, (aor, min(ids), max(ids)))
        wanted = set(ids)
        mine = [int(r[0]) for r in rows if int(r[0]) in wanted]
        writes = [self._write(self._q.set_acked, (at, i)) for i in mine]
        writes += [self._write(self._q.set_delivered, (at, i)) for i in mine]
        await asyncio.gather(*writes)
        return mine

    async def unread_count(self, aor: str) -> int:
        rows = await self._fetch(self._q.unread_count, (aor, False))
        return int(rows[0][0])

    async def inbox_aors(self) -> set[str]:
        return {str(r[0]) for r in await self._fetch(self._q.inbox_aors, ())}

    async def count_messages(self, aor: str) -> int:
        return int((await self._fetch(self._q.count_messages, (aor,)))[0][0])

    async def delivery_cursor(self, aor: str, device: str) -> int:
        rows = await self._fetch(self._q.delivery_cursor, (aor, device))
        return int(rows[0][0]) if rows else 0

    async def advance_cursor(self, aor: str, device: str, last_id: int) -> None:
        await self._write(self._q.advance_cursor, (aor, device, last_id))

    async def trim_messages(self, aor: str, count: int) -> int:
        await self._execute(self._q.trim_deliveries, (aor, count))
        return await self._execute(self._q.trim_messages, (aor, count))

    async def purge_messages(self, before: float, limit: int = 1000) -> int:
        await self._execute(self._q.purge_deliveries, (before, limit))
        return await self._execute(self._q.purge_messages, (before, limit))

    # schema (not part of `Store`: for health checks and tests)

    async def applied_migrations(self) -> list[int]:
        return [r[0] for r in await self._fetch(self._q.schema_versions, ())]
