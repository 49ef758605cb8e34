"""The inbox, top to bottom: a MESSAGE to a local user is stored, then delivered.

    MESSAGE (RFC 3428) ─ who sent it? (digest 407 for local users, trusted peers
    │                    for other domains) ─ recipient known? size, encoding, rate,
    │                    inbox cap ─ read the body (CPIM envelope, IMDN Message-ID)
    ├─ stored, committed (a resend with the same IMDN id / Call-ID+CSeq is not stored again)
    ├─ live bindings: sent to each (delivery.py); the first 2xx → 200 to the sender
    └─ otherwise 202, and a coalesced `message` push to the user's devices (notify.py)
    REGISTER ─ the device's undelivered messages go out, in order (delivery.py)

The sender's answer always comes after the commit: a message that got a 2xx
survives a crash of the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sipwake.auth import Caller
from sipwake.badge import Counts
from sipwake.config import MessagesConfig
from sipwake.messages.content import Content, parse_content
from sipwake.messages.delivery import Courier, DeliveryStore
from sipwake.messages.encoding import (
    ACCEPT_ENCODING,
    BadEncoding,
    DecodedTooLarge,
    UnsupportedEncoding,
    content_encoding,
    decode,
)
from sipwake.messages.notify import PushCoalescer
from sipwake.push.facade import Broadcaster
from sipwake.ratelimit import RateLimiter
from sipwake.sip.message import Message, make_response
from sipwake.sip.transaction import ServerTransaction, new_tag
from sipwake.sip.uac import Uac
from sipwake.store.errors import log_failure
from sipwake.store.models import Binding, Device, InboxMessage, User
from sipwake.tasks import Tasks
from sipwake.timeline import NO_TRACE, Trace
from sipwake.timing import Scheduler, sleep, timeout

log = logging.getLogger("sipwake.messages")

PURGE_INTERVAL = 3600.0  # seconds between retention purges
PURGE_CHUNK = 1000  # rows per delete: a big purge never holds the store for long
MAX_COUNTED_USERS = 100_000
FULL_RECHECK = 5.0  # seconds a full inbox (nothing delivered to drop) is not asked again


@dataclass(frozen=True, slots=True)
class Sender:
    uri: str  # authenticated user's AOR, or the From of a trusted peer's request
    name: str
    trusted: bool  # came from a trusted peer: its CPIM envelope may name the sender

    def resolve(self, content: Content) -> tuple[str, str]:
        """(uri, display name) to store: RCS clients put the name in the CPIM From."""
        uri = content.sender_uri if self.trusted and content.sender_uri else self.uri
        return uri, content.sender_name or self.name


class InboxStore(DeliveryStore, Counts, Protocol):
    """The store, as the inbox uses it."""

    async def add_message(self, message: InboxMessage) -> tuple[InboxMessage, bool]: ...

    async def count_messages(self, aor: str) -> int: ...

    async def trim_messages(self, aor: str, count: int) -> int: ...

    async def purge_messages(self, before: float, limit: int = 1000) -> int: ...

    async def inbox_aors(self) -> set[str]: ...


class Locations(Protocol):
    """The registrar, as the inbox sees it."""

    def live_bindings(self, aor: str) -> list[Binding]: ...

    async def devices_of(self, aor: str) -> list[Device]: ...


class Users(Protocol):
    async def get(self, username: str, domain: str) -> User | None: ...


class Gate(Protocol):
    async def admit(self, request: Message) -> Caller | Message: ...


class Inbox:
    def __init__(
        self,
        settings: MessagesConfig,
        domain: str,
        *,
        store: InboxStore,
        locations: Locations,
        users: Users,
        gate: Gate,
        uac: Uac,
        pusher: Broadcaster,
        tasks: Tasks,
        scheduler: Scheduler,
        clock: Callable[[], float] = time.time,
        trace: Trace = NO_TRACE,
    ) -> None:
        self.cfg = settings
        self.trace = trace  # each message's story, for the operator (sipwake/timeline.py)
        self.domain = domain
        self.store = store
        self.locations = locations
        self.users = users
        self.gate = gate
        self.tasks = tasks
        self.scheduler = scheduler
        self.clock = clock
        self.limiter = RateLimiter(settings.sender_rate, settings.sender_burst, scheduler.time)
        self.courier = Courier(store, uac, tasks.spawn, clock=clock,
                               on_delivered=self.messages_delivered, trace=trace)  # fmt: skip
        self.pushes = PushCoalescer(store, locations, pusher, tasks.spawn, scheduler)
        self._counts: dict[str, int] = {}  # aor → stored messages (for the cap), lazily read
        self._full: dict[str, float] = {}  # aor → until when it counts as full (scheduler)
        # recipients with anything stored: a REGISTER of anyone else costs no store read
        self._has_mail: set[str] = set()
        # a cluster's other nodes are told (the device may register with any of them)
        self.on_mail: Callable[[str], None] | None = None
        # a cluster: a binding another node holds is delivered to by that node's lane
        # (one lane per device in the cluster); returns whether it took the kick
        self.kick_elsewhere: Callable[[Binding], bool] | None = None
        self.on_delivery: Callable[[int], None] | None = None  # a message id delivered
        self.courier.on_delivery = self._delivery
        self.stored = 0  # messages stored (resends not counted): a metric

    async def load(self) -> None:
        """Who has mail waiting (also when back on a cluster's bus: what others
        stored meanwhile)."""
        self._has_mail = await self.store.inbox_aors()

    def mail_elsewhere(self, aor: str) -> None:
        """Another node stored a message for `aor`: deliver it when the device
        registers here."""
        self._has_mail.add(aor)

    def kicked(self, binding: Binding) -> None:
        """Another node stored a message for a device whose binding we hold."""
        self._has_mail.add(binding.aor)
        self.courier.kick(binding)

    def registered_elsewhere(self, binding: Binding) -> None:
        """The device registered with another node: its lane runs there now."""
        self.courier.moved(binding)

    def delivered_elsewhere(self, message_id: int) -> None:
        """Another node's lane delivered a message (a sender here may be waiting)."""
        self.courier.delivered_elsewhere(message_id)

    def _delivery(self, message_id: int) -> None:
        if self.on_delivery is not None:
            self.on_delivery(message_id)

    # ---------------------------------------------------------------- MESSAGE
    async def on_message(self, st: ServerTransaction) -> None:
        req = st.request
        ruri = req.request_uri
        if not ruri.is_sip or ruri.host != self.domain or not ruri.user:
            st.reply(404, "Not Found (not our domain)")
            return
        sender = await self._sender(st)
        if sender is None:
            return  # challenged or refused
        user = await self.users.get(ruri.user, self.domain)
        if user is None:
            st.reply(404)
            return
        body = self._readable(st)
        if body is None:
            return  # refused: 413, 415 or 400
        encoding, readable = body
        wait = self.limiter.take(sender.uri)
        if wait > 0:
            log.info("MESSAGE from %s over its rate limit", sender.uri)
            resp = make_response(req, 503, "Service Unavailable (rate limit)", to_tag=new_tag())
            resp.add("Retry-After", str(max(1, math.ceil(wait))))
            st.respond(resp)
            return

        content_type = req.get("Content-Type") or "text/plain"
        content = parse_content(content_type, readable)
        from_uri, from_name = sender.resolve(content)
        aor = user.aor
        live = self.locations.live_bindings(aor)
        if content.transient:  # "is typing…": worth nothing later, so never stored
            ok = False
            with contextlib.suppress(TimeoutError):
                async with timeout(self.scheduler, self.cfg.forward_timeout):
                    ok = await self.courier.forward_once(
                        live, from_uri, from_name, content_type, req.body, encoding
                    )
            st.reply(200 if ok else 480)
            return
        if not await self._room(aor):
            st.reply(480, "Temporarily Unavailable (inbox full)")
            return

        message = InboxMessage(
            id=0,
            aor=aor,
            dedup_key=_dedup_key(req, sender, from_uri, content),
            from_uri=from_uri,
            from_name=from_name,
            content_type=content_type,
            body=req.body,
            content_encoding=encoding,
            imdn_id=content.imdn_id,
            silent=content.silent,
            received_at=self.clock(),
        )
        stored, new = await self.store.add_message(message)  # committed
        self._has_mail.add(aor)
        if self.on_mail is not None:
            self.on_mail(aor)
        if not new:  # a resend: same answer as the first time, nothing stored
            log.info("MESSAGE %d to %s resent (%s)", stored.id, aor, req.call_id)
            for binding in live if not stored.delivered_at else ():
                self._kick(binding)
            st.reply(200 if stored.delivered_at else 202)
            return
        self.stored += 1
        if aor in self._counts:
            self._counts[aor] += 1
        await self._hand_over(st, stored, live, content.text)

    def _kick(self, binding: Binding) -> None:
        if self.kick_elsewhere is None or not self.kick_elsewhere(binding):
            self.courier.kick(binding)

    def _readable(self, st: ServerTransaction) -> tuple[str, bytes] | None:
        """The body's Content-Encoding and the body as it reads with that undone; None
        when it is refused (413 too big, 415 an encoding we can't read, 400 bad/empty)."""
        req = st.request
        too_large = f"Request Entity Too Large (body over {self.cfg.max_body})"
        if len(req.body) > self.cfg.max_body:
            st.reply(413, too_large)
            return None
        try:
            encoding = content_encoding(req.get("Content-Encoding"))
            readable = decode(encoding, req.body, self.cfg.max_body)
        except UnsupportedEncoding:
            resp = make_response(req, 415, to_tag=new_tag())
            resp.add("Accept-Encoding", ACCEPT_ENCODING)
            st.respond(resp)
            return None
        except DecodedTooLarge:
            st.reply(413, too_large)
            return None
        except BadEncoding as exc:
            st.reply(400, f"Bad Request ({exc})")
            return None
        if not readable:
            st.reply(400, "Bad Request (empty MESSAGE)")
            return None
        return encoding, readable

    async def _hand_over(
        self, st: ServerTransaction, stored: InboxMessage, live: list[Binding], preview: str
    ) -> None:
        """A new message, stored: to the live bindings at once (200 when one takes it in
        time), else 202 and a push to the sleeping devices."""
        delivered = False
        self.trace.record("message", str(stored.id), "stored", user=stored.aor,
                          sender=stored.from_uri, content_type=stored.content_type,
                          bytes=len(stored.body), live=len(live))
        # a binding the message can't go to (too big for UDP) is not waited for
        waiting = any(self.courier.can_take(b, stored) for b in live)
        if waiting:
            self.courier.expect(stored.id)
        for binding in live:
            self._kick(binding)
        if waiting:
            with contextlib.suppress(TimeoutError):
                async with timeout(self.scheduler, self.cfg.forward_timeout):
                    await self.courier.delivered(stored.id)
                    delivered = True
        st.reply(200 if delivered else 202)
        self.trace.record("message", str(stored.id), f"answered {200 if delivered else 202}")
        log.debug("MESSAGE %d to %s from %s: %s", stored.id, stored.aor, stored.from_uri,
                  "delivered" if delivered else "stored")  # fmt: skip
        if not delivered and not stored.silent:
            self.pushes.message_stored(stored, preview)

    async def _sender(self, st: ServerTransaction) -> Sender | None:
        """Who sent it; None when a challenge or a refusal was sent instead."""
        req = st.request
        caller = await self.gate.admit(req)
        if isinstance(caller, Message):
            st.respond(caller)
            return None
        addr = req.from_
        if caller.user is not None:
            return Sender(caller.user.aor, addr.display, trusted=False)
        uri = addr.uri
        return Sender(uri.aor() if uri.is_sip else str(uri), addr.display, trusted=True)

    async def _room(self, aor: str) -> bool:
        """Whether `aor` may store one more message; at the cap, the oldest delivered
        messages make room, undelivered ones never do."""
        cap = self.cfg.inbox_cap
        if cap <= 0:
            return True
        if self._full.get(aor, 0.0) > self.scheduler.time():
            return False  # found full a moment ago: don't scan the inbox per MESSAGE
        count = self._counts.get(aor)
        if count is None:
            count = await self.store.count_messages(aor)
            if len(self._counts) >= MAX_COUNTED_USERS:
                self._counts.clear()
                self._full.clear()
        if count >= cap:
            count -= await self.store.trim_messages(aor, count - cap + 1)
        self._counts[aor] = count
        if count >= cap:
            self._full[aor] = self.scheduler.time() + FULL_RECHECK
            return False
        self._full.pop(aor, None)
        return True

    def messages_delivered(self, aor: str) -> None:
        """Some of `aor`'s messages were delivered or acknowledged: they may make room."""
        self._full.pop(aor, None)

    async def backlog(self, limit: int) -> list[tuple[str, int]]:
        """(user, unread messages) of at most `limit` users with unread mail, among the
        first users with any (admin page)."""
        out: list[tuple[str, int]] = []
        for aor in sorted(self._has_mail)[: limit * 4]:
            unread = await self.store.unread_count(aor)
            if unread:
                out.append((aor, unread))
                if len(out) >= limit:
                    break
        return out

    # ---------------------------------------------------------------- REGISTER
    def on_registered(self, binding: Binding, device: Device | None, received_at: float) -> None:
        if binding.aor in self._has_mail:
            self.courier.registered(binding)

    # ------------------------------------------------------------------ purge
    async def purge(self, now: float | None = None) -> int:
        """Delete messages older than `retention_days`; returns how many went."""
        days = self.cfg.retention_days
        if days <= 0:
            return 0
        before = (self.clock() if now is None else now) - days * 86400.0
        total = 0
        while True:
            gone = await self.store.purge_messages(before, PURGE_CHUNK)
            total += gone
            if gone < PURGE_CHUNK:
                break
        if total:
            self._counts.clear()
            self._full.clear()
            log.info("inbox retention: %d messages older than %d days deleted", total, days)
        return total

    async def purge_every(self, interval: float = PURGE_INTERVAL) -> None:
        """Forever: the retention purge, every `interval` seconds."""
        while True:
            try:
                await self.purge()
            except Exception as exc:
                log_failure(log, exc, "inbox purge")
            await sleep(self.scheduler, interval)


def _dedup_key(req: Message, sender: Sender, from_uri: str, content: Content) -> str:
    """Same key, same message: the IMDN Message-ID is unique per sender (RFC 5438);
    without one, a resent transaction keeps its Call-ID and CSeq."""
    if content.imdn_id:
        raw = f"imdn\n{from_uri}\n{content.imdn_id}"
    else:
        raw = f"sip\n{sender.uri}\n{req.call_id}\n{req.cseq[0]}"
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
