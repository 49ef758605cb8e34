"""Provisioned users, read through a small cache.

`sipwake user add` writes to the store from another process, so entries expire:
a new user can register within `ttl` seconds, a deleted one is refused within it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from sipwake.store.base import Store
from sipwake.store.models import User


class Users(Protocol):
    """Who is provisioned, as the services look it up (UserDirectory's cached read)."""

    async def get(self, username: str, domain: str) -> User | None: ...


class UserDirectory:
    def __init__(
        self,
        store: Store,
        ttl: float = 30.0,
        negative_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 200_000,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.clock = clock
        self.max_entries = max_entries
        self._cache: dict[tuple[str, str], tuple[float, User | None]] = {}

    async def get(self, username: str, domain: str) -> User | None:
        key = (username, domain)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        user = await self.store.get_user(username, domain)
        if len(self._cache) >= self.max_entries:
            self._cache.clear()  # crude but bounded: a flood of unknown names can't grow it
        self._cache[key] = (now + (self.ttl if user else self.negative_ttl), user)
        return user

    def forget(self, username: str, domain: str) -> None:
        self._cache.pop((username, domain), None)
