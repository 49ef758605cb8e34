"""`message` pushes for a user whose app is asleep, coalesced.

The first message of a burst is pushed at once; then at most one push per user
(so per device) every `interval` seconds, carrying the newest message and the
unread count read at send time. A message that was delivered meanwhile (the app
woke up) needs no push: nothing is sent when nothing is unread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from sipwake.badge import Counts, badge
from sipwake.messages.content import number_of
from sipwake.push.facade import Broadcaster
from sipwake.push.notification import MessageNotification
from sipwake.store.errors import log_failure
from sipwake.store.models import Device, InboxMessage
from sipwake.timing import Scheduler, sleep

log = logging.getLogger("sipwake.messages")


class Devices(Protocol):
    async def devices_of(self, aor: str) -> list[Device]: ...


MAX_HELD = 100_000  # users held by other nodes' recent pushes


@dataclass(slots=True)
class _Pending:
    latest: tuple[InboxMessage, str] | None = None  # message and its preview text
    next_at: float = 0.0  # scheduler time before which no push may go
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # nothing left to push


class PushCoalescer:
    def __init__(
        self,
        counts: Counts,
        devices: Devices,
        pusher: Broadcaster,
        spawn: Callable[[Coroutine[Any, Any, Any]], object],
        scheduler: Scheduler,
        interval: float = 1.0,
    ) -> None:
        self.counts = counts  # unread messages and new voicemails: the push and its badge
        self.devices = devices
        self.pusher = pusher
        self._spawn = spawn
        self.scheduler = scheduler
        self.interval = interval
        self._users: dict[str, _Pending] = {}
        # a cluster: when another node last pushed for a user (scheduler time + interval)
        self._elsewhere: dict[str, float] = {}
        self.on_push: Callable[[str], None] | None = None  # the other nodes are told

    def message_stored(self, message: InboxMessage, preview: str) -> None:
        """Announce `message` (stored, not delivered) to the recipient's devices. Never blocks."""
        pending = self._users.get(message.aor)
        if pending is None:
            # another node's push for this user holds ours for its interval too
            held = self._elsewhere.pop(message.aor, 0.0)
            pending = self._users[message.aor] = _Pending(next_at=held)
            self._spawn(self._run(message.aor, pending))
        pending.latest = (message, preview)
        pending.settled.clear()

    def pushed_elsewhere(self, aor: str) -> None:
        """Another node pushed `aor` a message push: one push per interval, cluster-wide."""
        until = self.scheduler.time() + self.interval
        pending = self._users.get(aor)
        if pending is not None:
            pending.next_at = max(pending.next_at, until)
            return
        if len(self._elsewhere) >= MAX_HELD:
            now = self.scheduler.time()
            self._elsewhere = {k: t for k, t in self._elsewhere.items() if t > now}
        self._elsewhere[aor] = until

    async def idle(self, aor: str) -> None:
        """Until every push announced for `aor` has been sent (tests)."""
        pending = self._users.get(aor)
        if pending is not None:
            await pending.settled.wait()

    async def _run(self, aor: str, pending: _Pending) -> None:
        try:
            while True:
                delay = pending.next_at - self.scheduler.time()
                if delay > 0:
                    await sleep(self.scheduler, delay)  # the rate limit itself
                    continue
                latest, pending.latest = pending.latest, None
                if latest is None:
                    return  # nothing came during the last interval
                try:
                    await self._push(pending, *latest)
                except Exception as exc:
                    log_failure(log, exc, "message push for %s", aor)
                if pending.latest is None:
                    pending.settled.set()
        finally:
            if self._users.get(aor) is pending:
                del self._users[aor]
            pending.settled.set()

    async def _push(self, pending: _Pending, message: InboxMessage, preview: str) -> None:
        unread = await self.counts.unread_count(message.aor)
        if unread == 0:
            return  # delivered meanwhile
        devices = [d for d in await self.devices.devices_of(message.aor) if d.enabled]
        if not devices:
            return
        notification = MessageNotification(
            message_id=str(message.id),
            from_uri=message.from_uri,
            from_number=number_of(message.from_uri),
            from_name=message.from_name,
            body=preview,
            unread=unread,
            badge=await badge(self.counts, message.aor, unread=unread),
        )
        # the interval runs from the moment pushes go out, not from when we started
        # reading the count: under load the reads may take a while
        pending.next_at = self.scheduler.time() + self.interval
        if self.on_push is not None:
            self.on_push(message.aor)
        results = await self.pusher.send_all(devices, notification)
        log.info(
            "message push for %s (%d unread): %s", message.aor, unread,
            ", ".join(f"{r.device_id}={r.outcome}" for r in results),
        )
