"""Schema migrations, versioned in code.

`MIGRATIONS` is the ordered history of the schema. To change the schema, append a
`Migration` with the next version number; never edit one that has shipped, because
databases that already applied it will not run it again.

Statements are written once for both dialects. `{float}`, `{int}`, `{bool}` and
`{serial}` stand for the column types that differ (see `_TYPES`); a statement that
cannot be shared is given as a mapping `{"sqlite": ..., "postgresql": ...}`, and one
that a dialect does not need leaves that dialect out of its mapping.

Each backend's `open()` creates `schema_version` if needed and applies the pending
migrations in one transaction, recording one row per version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgresql"]
Statement = str | Mapping[Dialect, str]

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {
        "float": "REAL",  # 8-byte IEEE, same as double precision
        "int": "INTEGER",  # up to 64 bits
        "bool": "INTEGER",  # 0/1; the row readers turn it back into bool
        "serial": "INTEGER PRIMARY KEY",  # the rowid: ascending, no extra index
    },
    "postgresql": {
        "float": "DOUBLE PRECISION",
        "int": "BIGINT",
        "bool": "BOOLEAN",
        "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    },
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[Statement, ...]


SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version {int} PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at {float} NOT NULL
)"""

_KEEP_NEWEST = """
UPDATE devices SET {token} = '' WHERE {token} <> '' AND EXISTS (
    SELECT 1 FROM devices newer
    WHERE substr(newer.{token}, 1, 64) = substr(devices.{token}, 1, 64)
      AND newer.{token} = devices.{token}
      AND (newer.token_updated_at > devices.token_updated_at
           OR (newer.token_updated_at = devices.token_updated_at
               AND newer.device_id > devices.device_id)))"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "users, bindings, devices, push log",
        (
            """
            CREATE TABLE users (
                username TEXT NOT NULL,
                domain TEXT NOT NULL,
                ha1_md5 TEXT NOT NULL,
                ha1_sha256 TEXT NOT NULL,
                created_at {float} NOT NULL,
                PRIMARY KEY (username, domain)
            )""",
            """
            CREATE TABLE bindings (
                aor TEXT NOT NULL,
                key TEXT NOT NULL,
                contact TEXT NOT NULL,
                expires_at {float} NOT NULL,
                call_id TEXT NOT NULL,
                cseq {int} NOT NULL,
                q {float} NOT NULL,
                received TEXT NOT NULL,
                flow TEXT NOT NULL,
                instance TEXT NOT NULL,
                device_id TEXT NOT NULL,
                user_agent TEXT NOT NULL,
                path TEXT NOT NULL,
                updated_at {float} NOT NULL,
                PRIMARY KEY (aor, key)
            )""",
            # purge_expired_bindings runs often; without it every purge scans the table
            "CREATE INDEX bindings_expires_at ON bindings (expires_at)",
            """
            CREATE TABLE devices (
                device_id TEXT NOT NULL PRIMARY KEY,
                aor TEXT NOT NULL,
                provider TEXT NOT NULL,
                platform TEXT NOT NULL,
                push_token TEXT NOT NULL,
                voip_token TEXT NOT NULL,
                topic TEXT NOT NULL,
                team_id TEXT NOT NULL,
                pn_param TEXT NOT NULL,
                instance TEXT NOT NULL,
                sandbox {bool} NOT NULL,
                call_mode TEXT NOT NULL,
                ringtone TEXT NOT NULL,
                locale TEXT NOT NULL,
                privacy {bool} NOT NULL,
                enabled {bool} NOT NULL,
                disabled_reason TEXT NOT NULL,
                token_updated_at {float} NOT NULL,
                created_at {float} NOT NULL,
                updated_at {float} NOT NULL
            )""",
            "CREATE INDEX devices_aor ON devices (aor)",
            """
            CREATE TABLE push_attempts (
                id {serial},
                device_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                provider TEXT NOT NULL,
                push_id TEXT NOT NULL,
                attempt {int} NOT NULL,
                status {int} NOT NULL,
                outcome TEXT NOT NULL,
                reason TEXT NOT NULL,
                latency_ms {float} NOT NULL,
                at {float} NOT NULL
            )""",
            # (device_id, at) serves "newest attempts of one device" without a sort
            "CREATE INDEX push_attempts_device ON push_attempts (device_id, at)",
        ),
    ),
    Migration(
        4,
        "call log",
        (
            """
            CREATE TABLE call_log (
                call_id TEXT NOT NULL PRIMARY KEY,
                aor TEXT NOT NULL,
                caller_uri TEXT NOT NULL,
                caller_number TEXT NOT NULL,
                caller_name TEXT NOT NULL,
                started_at {float} NOT NULL,
                ended_at {float} NOT NULL,
                answered {bool} NOT NULL,
                missed {bool} NOT NULL,
                reason TEXT NOT NULL,
                answered_by TEXT NOT NULL
            )""",
            "CREATE INDEX call_log_aor ON call_log (aor, started_at)",
        ),
    ),
    Migration(
        2,
        "inbox: stored instant messages and their per-device deliveries",
        (
            # AUTOINCREMENT on SQLite: ids are never reused, even after the newest row
            # is deleted, so an `after=<id>` cursor can never skip a later message.
            {
                "sqlite": """
                CREATE TABLE inbox (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    aor TEXT NOT NULL,
                    dedup_key TEXT NOT NULL,
                    from_uri TEXT NOT NULL,
                    from_name TEXT NOT NULL,
                    content_type TEXT NOT NULL,
                    body BLOB NOT NULL,
                    imdn_id TEXT NOT NULL,
                    silent {bool} NOT NULL,
                    received_at {float} NOT NULL,
                    delivered_at {float} NOT NULL,
                    acked_at {float} NOT NULL
                )""",
                "postgresql": """
                CREATE TABLE inbox (
                    id {serial},
                    aor TEXT NOT NULL,
                    dedup_key TEXT NOT NULL,
                    from_uri TEXT NOT NULL,
                    from_name TEXT NOT NULL,
                    content_type TEXT NOT NULL,
                    body BYTEA NOT NULL,
                    imdn_id TEXT NOT NULL,
                    silent {bool} NOT NULL,
                    received_at {float} NOT NULL,
                    delivered_at {float} NOT NULL,
                    acked_at {float} NOT NULL
                )""",
            },
            # a resent MESSAGE (same IMDN Message-ID, or Call-ID + CSeq) is stored once
            "CREATE UNIQUE INDEX inbox_dedup ON inbox (aor, dedup_key)",
            # paging (GET /v1/messages?after=) and delivery on registration, in id order
            "CREATE INDEX inbox_aor ON inbox (aor, id)",
            # the retention purge
            "CREATE INDEX inbox_received ON inbox (received_at)",
            # the unread count (badge) reads only what is undelivered, not 30 days of history
            "CREATE INDEX inbox_unread ON inbox (aor) WHERE delivered_at = 0",
            """
            CREATE TABLE inbox_deliveries (
                message_id {int} NOT NULL,
                device TEXT NOT NULL,
                delivered_at {float} NOT NULL,
                PRIMARY KEY (message_id, device)
            )""",
            # Per device: every message up to last_id was delivered to it (or refused for
            # good), so a REGISTER refresh reads only what came after.
            """
            CREATE TABLE inbox_cursors (
                aor TEXT NOT NULL,
                device TEXT NOT NULL,
                last_id {int} NOT NULL,
                PRIMARY KEY (aor, device)
            )""",
        ),
    ),
    Migration(
        3,
        "voicemail state",
        (
            """
            CREATE TABLE mailboxes (
                aor TEXT NOT NULL PRIMARY KEY,
                waiting {bool} NOT NULL,
                account TEXT NOT NULL,
                new_count {int} NOT NULL,
                old_count {int} NOT NULL,
                urgent_new {int} NOT NULL,
                urgent_old {int} NOT NULL,
                last_from_uri TEXT NOT NULL,
                last_from_name TEXT NOT NULL,
                last_duration {int} NOT NULL,
                last_at {float} NOT NULL,
                updated_at {float} NOT NULL
            )""",
        ),
    ),
    Migration(
        5,
        "one push token, one device",
        (
            # Tokens are looked up when a device presents one (it moves there). FCM
            # tokens may be long: the index holds a prefix, the query checks the whole.
            "CREATE INDEX devices_push_token ON devices (substr(push_token, 1, 64))",
            "CREATE INDEX devices_voip_token ON devices (substr(voip_token, 1, 64))",
            # Devices that shared a token before: the newest upload keeps it.
            _KEEP_NEWEST.format(token="push_token"),
            _KEEP_NEWEST.format(token="voip_token"),
            "DELETE FROM devices WHERE push_token = '' AND voip_token = ''",
        ),
    ),
    Migration(
        6,
        "inbox: Content-Encoding kept with the body",
        ("ALTER TABLE inbox ADD COLUMN content_encoding TEXT NOT NULL DEFAULT ''",),
    ),
    Migration(
        7,
        "revoked API bearer tokens (until they would have expired)",
        (
            """
            CREATE TABLE revoked_tokens (
                token_id TEXT NOT NULL PRIMARY KEY,
                expires_at {float} NOT NULL
            )""",
            "CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at)",
            # retention purges of the call log and the push log go by time
            "CREATE INDEX call_log_started_at ON call_log (started_at)",
            "CREATE INDEX push_attempts_at ON push_attempts (at)",
        ),
    ),
    Migration(
        8,
        "push outbox: accepted pushes that outlive a process, until done",
        (
            """
            CREATE TABLE push_outbox (
                push_id TEXT NOT NULL PRIMARY KEY,
                device_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                notification TEXT NOT NULL,
                deadline {float} NOT NULL,
                created_at {float} NOT NULL
            )""",
            # pending pushes are read back oldest first at start
            "CREATE INDEX push_outbox_created_at ON push_outbox (created_at)",
        ),
    ),
    Migration(
        9,
        "cluster: the node holding a binding's connection",
        (
            "ALTER TABLE bindings ADD COLUMN node TEXT NOT NULL DEFAULT ''",
            # a push in the outbox is one node's to retry; a node that died leaves its
            # own to the first live node that adopts them
            "ALTER TABLE push_outbox ADD COLUMN node TEXT NOT NULL DEFAULT ''",
            # a node back on the bus reads what changed while it was away
            "CREATE INDEX bindings_updated_at ON bindings (updated_at)",
        ),
    ),
    Migration(
        10,
        "user changes: every write to users logged, so each node's HA1 cache forgets it",
        (
            # filled by triggers, so every writer is seen: `sipwake user`, provisioning,
            # another node, a hand-made UPDATE. Nodes poll it (auth/users.py).
            """
            CREATE TABLE user_changes (
                seq {serial},
                username TEXT NOT NULL,
                domain TEXT NOT NULL
            )""",
            {
                "sqlite": """
                CREATE TRIGGER users_inserted AFTER INSERT ON users BEGIN
                    INSERT INTO user_changes (username, domain)
                    VALUES (NEW.username, NEW.domain);
                END""",
                # a transaction-scoped lock: the writers of users take their seq and
                # commit one after another, so a reader reading `seq > last` never
                # passes a change still to commit with a lower seq
                "postgresql": """
                CREATE FUNCTION sipwake_user_changed() RETURNS trigger AS $$
                BEGIN
                    PERFORM pg_advisory_xact_lock(1936289912);
                    IF TG_OP <> 'INSERT' THEN
                        INSERT INTO user_changes (username, domain)
                        VALUES (OLD.username, OLD.domain);
                    END IF;
                    IF TG_OP <> 'DELETE' THEN
                        INSERT INTO user_changes (username, domain)
                        VALUES (NEW.username, NEW.domain);
                    END IF;
                    RETURN NULL;
                END $$ LANGUAGE plpgsql""",
            },
            {
                "sqlite": """
                CREATE TRIGGER users_updated AFTER UPDATE ON users BEGIN
                    INSERT INTO user_changes (username, domain)
                    VALUES (OLD.username, OLD.domain);
                    INSERT INTO user_changes (username, domain)
                    VALUES (NEW.username, NEW.domain);
                END""",
                "postgresql": """
                CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON users
                FOR EACH ROW EXECUTE FUNCTION sipwake_user_changed()""",
            },
            {
                "sqlite": """
                CREATE TRIGGER users_deleted AFTER DELETE ON users BEGIN
                    INSERT INTO user_changes (username, domain)
                    VALUES (OLD.username, OLD.domain);
                END""",
            },
        ),
    ),
)


def render(statement: Statement, dialect: Dialect) -> str:
    """The statement's SQL for one dialect, column types filled in."""
    sql = statement if isinstance(statement, str) else statement[dialect]
    return sql.format(**_TYPES[dialect]).strip()


def pending(applied: Iterable[int], dialect: Dialect) -> list[tuple[Migration, list[str]]]:
    """Migrations not yet `applied`, in version order, each with its rendered SQL. By
    set, not by the highest version: features add migrations independently, and one
    merged later may carry a lower number than one a database already has."""
    done = set(applied)
    return [
        (m, [render(s, dialect) for s in m.statements if isinstance(s, str) or dialect in s])
        for m in sorted(MIGRATIONS, key=lambda m: m.version)
        if m.version not in done
    ]


def latest_version() -> int:
    return max((m.version for m in MIGRATIONS), default=0)
