"""The one async interface every storage backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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


class Store(Protocol):
    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    async def close(self) -> None: ...

    # users
    async def put_user(self, user: User) -> None:
        """Insert or replace a user (same username and domain)."""

    async def put_users(self, users: Sequence[User]) -> None:
        """Insert or replace many users in one transaction: all or none."""

    async def get_user(self, username: str, domain: str) -> User | None: ...

    async def delete_user(self, username: str, domain: str) -> bool: ...

    async def list_users(self, domain: str | None = None) -> list[User]: ...

    async def user_changes(self, after: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        """(seq, username, domain) of the writes to users (add, password change, delete,
        by anyone) with seq > `after`, in the order they committed, at most `limit`."""

    async def last_user_change(self) -> int:
        """The seq of the newest write to users (0: none yet)."""

    async def trim_user_changes(self, upto: int) -> int:
        """Forget the changes with seq <= `upto`; returns how many went."""

    # bindings
    async def put_binding(self, binding: Binding) -> None:
        """Insert or replace the binding with the same (aor, key)."""

    async def delete_binding(self, aor: str, key: str) -> bool: ...

    async def write_bindings(self, put: list[Binding], delete: list[tuple[str, str]]) -> None:
        """Many binding changes (distinct (aor, key)s) in one transaction: all or none."""

    async def bindings(self, aor: str) -> list[Binding]:
        """Bindings of one AOR, expired ones included (the caller filters by time)."""

    async def all_bindings(self) -> list[Binding]: ...

    async def purge_expired_bindings(self, now: float) -> int: ...

    # devices
    async def put_device(self, device: Device) -> None:
        """Insert or replace a device by device_id."""

    async def get_device(self, device_id: str) -> Device | None: ...

    async def devices(self, aor: str) -> list[Device]: ...

    async def some_devices(self, limit: int) -> list[Device]:
        """Up to `limit` devices, of any users (the registrar's start)."""

    async def delete_device(self, device_id: str) -> bool: ...

    async def device_counts(self) -> dict[tuple[str, bool], int]:
        """(platform, enabled) → how many devices (for the metrics)."""

    async def devices_with_token(self, token: str) -> list[Device]:
        """Devices of any user holding `token` as their push or VoIP token."""

    async def disable_device(self, device_id: str, reason: str, token_at: float) -> bool:
        """Disable a device unless its token was uploaded after `token_at` (APNs 410 rule).

        Returns True when the device was disabled."""

    # push log
    async def add_push_attempt(self, attempt: PushAttempt) -> None: ...

    async def push_attempts(self, device_id: str, limit: int = 100) -> list[PushAttempt]:
        """Newest first."""

    # push outbox (pushes accepted for sending that outlive a process)
    async def add_outbox_push(self, push: OutboxPush) -> None:
        """Keep `push` until deleted (a second add of the same push_id is ignored);
        returns once committed."""

    async def delete_outbox_push(self, push_id: str) -> None:
        """The push is done (delivered, refused or expired): forget it."""

    async def outbox_pushes(self, node: str = "") -> list[OutboxPush]:
        """Every push still kept for `node` (a cluster node, "" alone), oldest first."""

    async def outbox_nodes(self) -> list[str]:
        """The nodes with pushes kept in the outbox."""

    async def adopt_outbox(self, node: str, from_node: str) -> int:
        """`from_node`'s pushes become `node`'s; how many (0: another node took them)."""

    # call log
    async def put_call(self, record: CallRecord) -> None:
        """Insert or replace a call log entry by call_id."""

    async def put_calls(self, records: Sequence[CallRecord]) -> None:
        """put_call for each, in one transaction."""

    async def calls(
        self, aor: str, missed_only: bool = False, limit: int = 100
    ) -> list[CallRecord]:
        """Newest first."""

    # API tokens revoked before their expiry
    async def revoke_token(self, token_id: str, expires_at: float) -> None: ...

    async def token_revoked(self, token_id: str) -> bool: ...

    async def purge_revoked_tokens(self, now: float) -> int:
        """Forget revocations of tokens expired by `now`; returns how many went."""

    # retention
    async def purge_calls(self, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` call-log rows started before `before`; how many went."""

    async def purge_push_attempts(self, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` push-log rows from before `before`; how many went."""

    # voicemail
    async def put_mailbox(self, mailbox: Mailbox) -> None:
        """Insert or replace a user's voicemail state by aor."""

    async def get_mailbox(self, aor: str) -> Mailbox | None: ...

    # inbox (instant messages, store-and-forward)
    async def add_message(self, message: InboxMessage) -> tuple[InboxMessage, bool]:
        """Store `message` (its `id` is ignored) unless the recipient already has one with
        the same `dedup_key`. Returns the stored message (with its id) and whether it is
        new; returns once committed."""

    async def messages(self, aor: str, after: int = 0, limit: int = 100) -> list[InboxMessage]:
        """The recipient's messages with id > `after`, oldest first."""

    async def undelivered_messages(
        self, aor: str, device: str, after: int = 0, limit: int = 100
    ) -> list[InboxMessage]:
        """Messages with id > `after` not yet delivered to `device` nor acknowledged over
        HTTP, oldest first."""

    async def mark_delivered(self, message_id: int, device: str, at: float) -> None:
        """`device` answered 2xx: remember it, and mark the message delivered if not yet."""

    async def ack_messages(self, aor: str, ids: Sequence[int], at: float) -> list[int]:
        """Acknowledge (and mark delivered) those of `ids` that are `aor`'s messages;
        returns them. Other ids are ignored."""

    async def unread_count(self, aor: str) -> int:
        """Undelivered messages, delivery reports excluded (the badge)."""

    async def count_messages(self, aor: str) -> int: ...

    async def inbox_aors(self) -> set[str]:
        """Recipients with at least one message in the inbox."""

    async def delivery_cursor(self, aor: str, device: str) -> int:
        """The id up to which everything was delivered to `device` (0: none yet)."""

    async def advance_cursor(self, aor: str, device: str, last_id: int) -> None:
        """Move the device's cursor forward to `last_id` (never backward)."""

    async def trim_messages(self, aor: str, count: int) -> int:
        """Delete up to `count` of the oldest delivered messages; returns how many went."""

    async def purge_messages(self, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` messages received before `before`; returns how many went."""
