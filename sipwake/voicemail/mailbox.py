"""One user's voicemail state: a report comes in, the state is stored, and what changed
decides what goes out.

- stored first (the voicemail system gets its 200 only once the state is committed);
- the new-message count **rose** → one `voicemail` push to every enabled device of the
  user (none when only the old count changed or the new count dropped);
- the summary **changed** → the devices that are online hear about it (`on_change`:
  NOTIFY to subscribers and to registered phones, see notifier.py).

Reports for one user are applied one at a time (a per-user lock), so "rose" always
compares against the state the previous report left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol

from sipwake.badge import Counts as BadgeCounts
from sipwake.badge import badge
from sipwake.push.facade import Broadcaster, Result
from sipwake.push.notification import VoicemailNotification
from sipwake.store.errors import log_failure
from sipwake.store.models import Device, Mailbox
from sipwake.tasks import Tasks
from sipwake.voicemail.summary import Caller, Counts, render

log = logging.getLogger("sipwake.voicemail")


@dataclass(frozen=True, slots=True)
class Report:
    """What a voicemail system says about one mailbox (a NOTIFY or a webhook call)."""

    waiting: bool | None = None  # Messages-Waiting; None: new > 0
    account: str = ""  # Message-Account; empty keeps the stored one
    voice: Counts | None = None  # None: counts not given (summary without Voice-Message)
    caller: Caller = field(default_factory=Caller)
    source: str = ""  # for the log: "sip:udp:1.2.3.4:5060", "webhook"


@dataclass(frozen=True, slots=True)
class Change:
    mailbox: Mailbox  # the state now stored
    rose: bool  # the new count went up: a push is on its way
    changed: bool  # what a device shows (waiting, account, counts) is different


def summary_body(mailbox: Mailbox) -> bytes:
    """The message-summary a device receives for this state."""
    voice = Counts(mailbox.new_count, mailbox.old_count, mailbox.urgent_new, mailbox.urgent_old)
    return render(mailbox.waiting, mailbox.account or mailbox.aor, voice)


def _shown(m: Mailbox) -> tuple[object, ...]:
    return (m.waiting, m.account, m.new_count, m.old_count, m.urgent_new, m.urgent_old)


class MailboxStore(BadgeCounts, Protocol):
    """The store, as voicemail uses it (the badge reads unread messages too)."""

    async def put_mailbox(self, mailbox: Mailbox) -> None: ...


class Mailboxes:
    def __init__(
        self,
        store: MailboxStore,
        push: Broadcaster,
        tasks: Tasks,
        devices_of: Callable[[str], Awaitable[list[Device]]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.push = push
        self.devices_of = devices_of  # the registrar's cached read
        self.tasks = tasks
        self.clock = clock
        # Told of every change, under the user's lock (so in order): NOTIFY fan-out.
        self.on_change: Callable[[Mailbox], None] = lambda mailbox: None
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def lock(self, aor: str) -> AsyncIterator[None]:
        """Serialize work on one user's mailbox (reports, a subscription's first NOTIFY)."""
        lock, users = self._locks.get(aor) or (asyncio.Lock(), 0)
        self._locks[aor] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[aor]
            if users == 1:
                del self._locks[aor]
            else:
                self._locks[aor] = (lock, users - 1)

    async def current(self, aor: str) -> Mailbox:
        return await self.store.get_mailbox(aor) or Mailbox(aor)

    async def report(self, aor: str, report: Report) -> Change:
        """Apply one report: store it, then push and notify as the change warrants."""
        async with self.lock(aor):
            before = await self.current(aor)
            now = self.clock()
            after = _apply(before, report, now)
            rose = after.new_count > before.new_count
            if rose:
                caller = report.caller
                after.last_from_uri, after.last_from_name = caller.uri, caller.name
                after.last_duration, after.last_at = caller.duration, now
            await self.store.put_mailbox(after)
            changed = _shown(after) != _shown(before)
            log.info(
                "voicemail %s from %s: new %d→%d, old %d→%d%s", aor, report.source or "?",
                before.new_count, after.new_count, before.old_count, after.old_count,
                ", push" if rose else "",
            )  # fmt: skip
            if changed:
                try:
                    self.on_change(after)
                except Exception as exc:
                    log_failure(log, exc, "voicemail change fan-out for %s", aor)
        if rose:
            self.tasks.spawn(self._push(after, report.caller), f"voicemail push to {aor}")
        return Change(after, rose, changed)

    # ------------------------------------------------------------------ push
    async def _push(self, mailbox: Mailbox, caller: Caller) -> Sequence[Result]:
        devices = [d for d in await self.devices_of(mailbox.aor) if d.enabled]
        if not devices:
            log.info("voicemail for %s: no push device", mailbox.aor)
            return []
        notification = VoicemailNotification(
            from_uri=caller.uri,
            from_name=caller.name,
            duration=caller.duration,
            new=mailbox.new_count,
            old=mailbox.old_count,
            badge=await badge(self.store, mailbox.aor, new_voicemails=mailbox.new_count),
        )
        results = await self.push.send_all(devices, notification)
        delivered = sum(r.outcome == "delivered" for r in results)
        log.info("voicemail push to %s: %d/%d devices", mailbox.aor, delivered, len(results))
        return results


def _apply(before: Mailbox, report: Report, now: float) -> Mailbox:
    voice = report.voice
    if voice is None:
        if report.waiting is False:  # nothing waiting: no new messages
            voice = Counts(0, before.old_count, 0, before.urgent_old)
        else:  # counts not given: keep what we knew
            voice = Counts(before.new_count, before.old_count, before.urgent_new,
                           before.urgent_old)  # fmt: skip
    waiting = report.waiting if report.waiting is not None else voice.new > 0
    return replace(
        before,
        waiting=waiting,
        account=report.account or before.account,
        new_count=voice.new,
        old_count=voice.old,
        urgent_new=voice.urgent_new,
        urgent_old=voice.urgent_old,
        updated_at=now,
    )
