"""Provisioned users, held in memory: a REGISTER reads no store for its user's HA1.

The users are read once (`warm`, at start, up to `max_entries`; a user missing from
memory is read on first use). What changes them is never this process alone:
`sipwake user add|passwd|del` and bulk provisioning write the store from another
process, a cluster's nodes share PostgreSQL. So every write to the users table is
logged in the store by a trigger (`user_changes`, migration 10), whoever made it, and
`sync` reads that log every `poll` seconds and forgets the users it names.

The bound, explicit: a password change or a deletion is seen within `poll` (1 s) plus
one store read. Should the log go unread (the store unreachable, the loop stalled),
an entry is still used only while its last confirmation — its read, or a sync begun
after it — is younger than `max_stale` (30 s, the old time-to-live); past that it is
read again. A name the store doesn't know is remembered `negative_ttl` seconds, so a
flood of unknown names costs reads, not memory beyond `max_entries`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from sipwake.store.base import Store
from sipwake.store.errors import log_failure
from sipwake.store.models import User

log = logging.getLogger("sipwake.auth")

CHANGES_BATCH = 1000  # log rows read per query
# Changes kept in the log behind the newest: a node further behind than this (away,
# stalled) can't know what it missed, and forgets every user instead.
CHANGES_KEPT = 10_000


class Users(Protocol):
    """Who is provisioned, as the services look it up (UserDirectory's cached read)."""

    async def get(self, username: str, domain: str) -> User | None: ...


class UserDirectory:
    def __init__(
        self,
        store: Store,
        poll: float = 1.0,
        max_stale: float = 30.0,
        negative_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 1_000_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.poll = poll
        self.max_stale = max_stale
        self.negative_ttl = negative_ttl
        self.clock = clock
        self.max_entries = max_entries
        self.sleep = sleep
        # domain → username → user: one small dict per domain, no key tuple per user
        self._users: dict[str, dict[str, User]] = {}
        self._count = 0
        # users read since the last sync began, with when: older ones are vouched
        # for by that sync (so no time is kept per user)
        self._recent: dict[tuple[str, str], float] = {}
        self._unknown: dict[tuple[str, str], float] = {}  # → until when
        self._seq = 0  # the newest change applied
        self._trimmed = 0  # changes up to this seq were trimmed from the log
        self._synced_at = float("-inf")  # when the last good sync began

    # ------------------------------------------------------------------ reads
    async def get(self, username: str, domain: str) -> User | None:
        now = self.clock()
        user = self._users.get(domain, {}).get(username)
        if user is not None and self._fresh((username, domain), now):
            return user
        if user is None and self._unknown.get((username, domain), 0.0) > now:
            return None
        seq = self._seq
        found = await self.store.get_user(username, domain)
        if seq != self._seq:
            # a sync ran while we read: `found` may predate a change it applied
            self._forget(username, domain)
            self._unknown.pop((username, domain), None)
            return found
        if found is None:
            self._forget(username, domain)
            if len(self._unknown) >= self.max_entries:
                self._unknown.clear()  # crude but bounded
            self._unknown[(username, domain)] = now + self.negative_ttl
        else:
            self._unknown.pop((username, domain), None)
            self._put(found)
            self._recent[(username, domain)] = now
        return found

    def _fresh(self, key: tuple[str, str], now: float) -> bool:
        if now - self._synced_at < self.max_stale:
            return True
        read = self._recent.get(key)
        return read is not None and now - read < self.max_stale

    def _put(self, user: User) -> None:
        domain = sys.intern(user.domain)
        user.domain = domain
        by_name = self._users.setdefault(domain, {})
        if user.username not in by_name:
            if self._count >= self.max_entries:
                self._evict()
            self._count += 1
        by_name[user.username] = user

    def _evict(self) -> None:
        """Make room for one: the oldest read of the fullest domain goes."""
        by_name = max(self._users.values(), key=len)
        name = next(iter(by_name))
        del by_name[name]
        self._count -= 1

    def _forget(self, username: str, domain: str) -> None:
        by_name = self._users.get(domain)
        if by_name is not None and by_name.pop(username, None) is not None:
            self._count -= 1
        self._recent.pop((username, domain), None)

    def forget(self, username: str, domain: str) -> None:
        """This user changed: read it again on next use."""
        self._forget(username, domain)
        self._unknown.pop((username, domain), None)

    def forget_all(self) -> None:
        self._users.clear()
        self._count = 0
        self._recent.clear()
        self._unknown.clear()

    def __len__(self) -> int:
        return self._count

    # ----------------------------------------------------------- the change log
    async def warm(self, domain: str | None = None) -> int:
        """Read the users (of `domain`) into memory, up to `max_entries`; how many."""
        began = self.clock()
        seq = await self.store.last_user_change()  # before the read: nothing is missed
        users = await self.store.list_users(domain)
        self._seq = max(self._seq, seq)
        for user in users[: self.max_entries]:
            self._put(user)
        self._synced_at = began
        self._recent.clear()
        return min(len(users), self.max_entries)

    async def sync(self) -> bool:
        """Forget the users changed since the last sync (by anyone, anywhere); False
        when the store could not be read."""
        began = self.clock()
        try:
            newest = await self.store.last_user_change()
            if newest - self._seq >= CHANGES_KEPT or newest < self._seq:
                # behind what the log keeps (or the log was reset): start afresh
                self.forget_all()
                self._seq = newest
            while self._seq < newest:
                changes = await self.store.user_changes(self._seq, CHANGES_BATCH)
                for seq, username, domain in changes:
                    self.forget(username, domain)
                    self._seq = seq
                if len(changes) < CHANGES_BATCH:
                    break
            if newest - CHANGES_KEPT >= self._trimmed + CHANGES_KEPT // 10:
                # any node may trim: the rows behind what the log keeps
                await self.store.trim_user_changes(newest - CHANGES_KEPT)
                self._trimmed = newest - CHANGES_KEPT
        except Exception as exc:
            log_failure(log, exc, "reading the users' change log")
            return False
        self._synced_at = began
        self._recent.clear()
        return True

    async def run(self) -> None:
        """Sync every `poll` seconds, for ever (the server's background task)."""
        while True:
            await self.sleep(self.poll)
            await self.sync()
