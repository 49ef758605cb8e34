"""Devices subscribing to their own mailbox: RFC 6665 SUBSCRIBE/NOTIFY, RFC 3842 package.

SUBSCRIBE (Event: message-summary) to the user's AOR, digest-authenticated as that user
(407; a trusted peer speaks for the user in From) → 200 with our To tag, the granted
Expires and our Contact, then at once a NOTIFY with the current state and
`Subscription-State: active;expires=N`. Every change of the mailbox is NOTIFYed in the
dialog. A refresh (SUBSCRIBE in the dialog) restarts the clock and re-sends the state;
`Expires: 0` or the clock running out ends it with a final NOTIFY
`Subscription-State: terminated;reason=timeout`. A NOTIFY the device refuses (481,
timeout, any error) ends the subscription silently.

Subscriptions live in memory: after a restart a device's refresh gets 481 and it
subscribes again (RFC 6665 §4.1.2.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from dataclasses import dataclass, field

from sipwake.auth import Admission
from sipwake.auth.users import Users
from sipwake.registrar.registrar import reach
from sipwake.sip.message import Message, make_response
from sipwake.sip.peer import Peer
from sipwake.sip.transaction import ServerTransaction, new_tag
from sipwake.sip.uac import Uac
from sipwake.store.models import Binding, Mailbox
from sipwake.tasks import Tasks
from sipwake.voicemail.mailbox import Mailboxes, summary_body
from sipwake.voicemail.summary import CONTENT_TYPE, EVENT
from sipwake.voicemail.trust import Trust

log = logging.getLogger("sipwake.voicemail")

DEFAULT_EXPIRES = 3600  # RFC 3842 §4: the package's default subscription duration
MAX_PER_USER = 32
_ACCEPTABLE = (CONTENT_TYPE, "application/*", "*/*")

DialogKey = tuple[str, str, str, str]  # Call-ID, our tag, their tag, Event id


def parse_event(value: str | None) -> tuple[str, str]:
    """(package, id) of an Event header; ("", "") when there is none."""
    if not value:
        return "", ""
    package, *params = (p.strip() for p in value.split(";"))
    event_id = ""
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "id":
            event_id = val.strip()
    return package.lower(), event_id


def media_type(value: str | None) -> str:
    """`application/simple-message-summary` of a Content-Type or Accept value."""
    return (value or "").split(";")[0].strip().lower()


def bad_event(request: Message) -> Message:
    resp = make_response(request, 489)
    resp.add("Allow-Events", EVENT)
    return resp


@dataclass(eq=False)
class Subscription:
    aor: str
    call_id: str
    local_tag: str  # our tag: the To tag we gave the SUBSCRIBE
    remote_tag: str  # the subscriber's From tag
    event_id: str
    local: str  # From of our NOTIFYs: the SUBSCRIBE's To, with our tag
    remote: str  # To of our NOTIFYs: the SUBSCRIBE's From, as sent
    target: str  # the subscriber's Contact URI (remote target)
    route: list[str]  # Record-Route of the SUBSCRIBE: our NOTIFYs' Route set
    peer: Peer  # where the SUBSCRIBE came from: our NOTIFYs go back there (NAT, flows)
    instance: str  # +sip.instance of the Contact, to recognise the device's binding
    expires_at: float  # loop time
    cseq: int = 0  # of our last NOTIFY
    active: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one NOTIFY at a time, in order

    @property
    def key(self) -> DialogKey:
        return (self.call_id, self.local_tag, self.remote_tag, self.event_id)

    @property
    def event(self) -> str:
        return f"{EVENT};id={self.event_id}" if self.event_id else EVENT


class Subscriptions:
    def __init__(
        self,
        *,
        users: Users,
        auth: Admission,
        uac: Uac,
        trust: Trust,
        mailboxes: Mailboxes,
        tasks: Tasks,
        min_expires: int,
        max_expires: int,
    ) -> None:
        self.users = users
        self.auth = auth
        self.uac = uac
        self.trust = trust
        self.mailboxes = mailboxes
        self.tasks = tasks
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.dialogs: dict[DialogKey, Subscription] = {}
        self.by_aor: dict[str, dict[DialogKey, Subscription]] = {}
        self._heap: list[tuple[float, int, Subscription]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()

    # ------------------------------------------------------------- SUBSCRIBE
    async def on_subscribe(self, st: ServerTransaction) -> None:
        request = st.request
        _, event_id = parse_event(request.get("Event"))  # the package is message-summary
        if request.to_tag:
            await self._refresh(st, event_id)
            return
        user = self.trust.local_user(request.request_uri)
        if user is None:
            st.respond(make_response(request, 404, "Not Found (not our domain)"))
            return
        who = await self._subscriber(st)
        if who is None:
            return
        if who != user:
            st.respond(make_response(request, 403, "Forbidden (not your mailbox)"))
            return
        aor = f"sip:{user}@{self.trust.domain}"
        if await self.users.get(user, self.trust.domain) is None:
            st.respond(make_response(request, 404))
            return
        contact = self._contact_of(st)
        expires = self._expires(st)
        if contact is None or expires is None or not self._acceptable(st):
            return
        if not request.from_tag:
            st.respond(make_response(request, 400, "Bad Request (From without tag)"))
            return
        if expires and len(self.by_aor.get(aor, {})) >= MAX_PER_USER:
            resp = make_response(request, 503, "Service Unavailable (too many subscriptions)")
            resp.add("Retry-After", "60")
            st.respond(resp)
            return
        to = request.get("To") or ""
        sub = Subscription(
            aor=aor,
            call_id=request.call_id,
            local_tag=new_tag(),
            remote_tag=request.from_tag,
            event_id=event_id,
            local="",
            remote=request.get("From") or "",
            target=contact[0],
            route=request.get_all("Record-Route"),
            peer=request.source,
            instance=contact[1],
            expires_at=_now() + expires,
        )
        sub.local = f"{to};tag={sub.local_tag}"
        async with self.mailboxes.lock(aor):
            st.respond(self._ok(request, sub, expires))
            mailbox = await self.mailboxes.current(aor)
            if expires == 0:  # a one-time fetch of the state (RFC 6665 §4.1.2.1)
                sub.active = False
                self._send(sub, summary_body(mailbox), "terminated;reason=timeout")
                return
            self._add(sub)
            self._send(sub, summary_body(mailbox), self._state(sub))
        log.info("%s subscribed to its mailbox for %ds from %s", aor, expires, sub.peer)

    async def _refresh(self, st: ServerTransaction, event_id: str) -> None:
        request = st.request
        key = (request.call_id, request.to_tag, request.from_tag, event_id)
        sub = self.dialogs.get(key)
        if sub is None or not sub.active:
            st.respond(make_response(request, 481, "Subscription Does Not Exist"))
            return
        who = await self._subscriber(st)
        if who is None:
            return
        if f"sip:{who}@{self.trust.domain}" != sub.aor:
            st.respond(make_response(request, 403, "Forbidden (not your mailbox)"))
            return
        contact = self._contact_of(st)
        expires = self._expires(st)
        if contact is None or expires is None or not self._acceptable(st):
            return
        async with self.mailboxes.lock(sub.aor):
            if not sub.active:  # expired while we authenticated
                st.respond(make_response(request, 481, "Subscription Does Not Exist"))
                return
            sub.target, sub.peer = contact[0], request.source  # a target refresh
            sub.instance = contact[1] or sub.instance
            st.respond(self._ok(request, sub, expires))
            mailbox = await self.mailboxes.current(sub.aor)
            if expires == 0:
                self._end(sub, summary_body(mailbox))
                log.info("%s unsubscribed from its mailbox", sub.aor)
                return
            sub.expires_at = _now() + expires
            self._schedule(sub)
            self._send(sub, summary_body(mailbox), self._state(sub))

    async def _subscriber(self, st: ServerTransaction) -> str | None:
        """The user subscribing: digest-authenticated, or named in From by a trusted
        peer. None when a challenge or refusal was sent instead."""
        request = st.request
        caller = await self.auth.admit(request)
        if isinstance(caller, Message):
            st.respond(caller)
            return None
        if caller.user is not None:
            return caller.user.username
        user = self.trust.local_user(request.from_.uri)
        if user is None:
            st.respond(make_response(request, 403, "Forbidden (From is not a local user)"))
        return user

    def _contact_of(self, st: ServerTransaction) -> tuple[str, str] | None:
        """(Contact URI, +sip.instance) of the subscriber; 400 when missing."""
        contacts = st.request.contacts
        if len(contacts) != 1 or contacts[0].star or not contacts[0].uri.is_sip:
            st.respond(make_response(st.request, 400, "Bad Request (need one SIP Contact)"))
            return None
        contact = contacts[0]
        instance = (contact.params.get("+sip.instance") or "").strip('"').strip("<>")
        return str(contact.uri), instance

    def _expires(self, st: ServerTransaction) -> int | None:
        """The granted duration (0 = unsubscribe); 423 when too brief."""
        asked = st.request.int_header("Expires")
        if asked is None:
            asked = DEFAULT_EXPIRES
        if 0 < asked < self.min_expires:
            resp = make_response(st.request, 423)
            resp.add("Min-Expires", str(self.min_expires))
            st.respond(resp)
            return None
        return min(asked, self.max_expires)

    def _acceptable(self, st: ServerTransaction) -> bool:
        accept = st.request.get_all("Accept")
        if accept and not any(media_type(a) in _ACCEPTABLE for a in accept):
            resp = make_response(st.request, 406)
            resp.add("Accept", CONTENT_TYPE)
            st.respond(resp)
            return False
        return True

    def _ok(self, request: Message, sub: Subscription, expires: int) -> Message:
        resp = make_response(request, 200, to_tag=sub.local_tag)
        resp.add("Expires", str(expires))
        resp.add("Contact", self._our_contact(sub.peer))
        return resp

    def _our_contact(self, peer: Peer) -> str:
        host, port = self.uac.local_address(peer.transport)
        host = f"[{host}]" if ":" in host else host
        return f"<sip:{host}:{port};transport={peer.transport}>"

    def _state(self, sub: Subscription) -> str:
        return f"active;expires={max(0, round(sub.expires_at - _now()))}"

    # ------------------------------------------------------------- bookkeeping
    def _add(self, sub: Subscription) -> None:
        self.dialogs[sub.key] = sub
        self.by_aor.setdefault(sub.aor, {})[sub.key] = sub
        self._schedule(sub)

    def _remove(self, sub: Subscription) -> None:
        sub.active = False
        self.dialogs.pop(sub.key, None)
        mine = self.by_aor.get(sub.aor)
        if mine is not None:
            mine.pop(sub.key, None)
            if not mine:
                del self.by_aor[sub.aor]

    def _end(self, sub: Subscription, body: bytes) -> None:
        """Unsubscribed or expired: forget it, and say so in a final NOTIFY."""
        self._remove(sub)
        self._send(sub, body, "terminated;reason=timeout")

    def _schedule(self, sub: Subscription) -> None:
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (sub.expires_at, next(self._seq), sub))
        if earliest is None or sub.expires_at < earliest:
            self._wake.set()

    async def expire_forever(self) -> None:
        while True:
            self._wake.clear()
            if not self._heap:
                await self._wake.wait()
                continue
            delay = self._heap[0][0] - _now()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            now = _now()
            due: list[Subscription] = []
            while self._heap and self._heap[0][0] <= now:
                _, _, sub = heapq.heappop(self._heap)
                if sub.active and sub.expires_at <= now:  # not refreshed since
                    due.append(sub)
            for sub in due:
                async with self.mailboxes.lock(sub.aor):
                    if sub.active and sub.expires_at <= _now():
                        self._end(sub, summary_body(await self.mailboxes.current(sub.aor)))
                        log.info("%s mailbox subscription expired", sub.aor)

    # ------------------------------------------------------------- NOTIFY out
    def publish(self, mailbox: Mailbox) -> None:
        """The mailbox changed: NOTIFY every subscription of its user (in order)."""
        body = summary_body(mailbox)
        for sub in list(self.by_aor.get(mailbox.aor, {}).values()):
            self._send(sub, body, self._state(sub))

    def covers(self, binding: Binding) -> bool:
        """A subscription from this registered device (it hears changes in-dialog)."""
        subs = self.by_aor.get(binding.aor)
        if not subs:
            return False
        target = reach(binding).request_uri
        return any(
            sub.active
            and (
                (sub.instance and sub.instance == binding.instance)
                or str(sub.peer) == binding.received
                or sub.target == target
            )
            for sub in subs.values()
        )

    def _send(self, sub: Subscription, body: bytes, state: str) -> None:
        self.tasks.spawn(self._notify(sub, body, state), f"NOTIFY to {sub.aor}")

    async def _notify(self, sub: Subscription, body: bytes, state: str) -> None:
        async with sub.lock:  # FIFO: NOTIFYs leave in the order they were queued
            final = state.startswith("terminated")
            if not sub.active and not final:
                return  # ended meanwhile: only its terminating NOTIFY still goes
            sub.cseq += 1
            msg = self.uac.new_request(
                "NOTIFY", sub.target, sub.local, sub.remote, call_id=sub.call_id,
                cseq=sub.cseq, body=body,
                headers=[("Event", sub.event), ("Subscription-State", state),
                         ("Content-Type", CONTENT_TYPE),
                         ("Contact", self._our_contact(sub.peer))],
            )  # fmt: skip
            for route in sub.route:
                msg.add("Route", route)
            resp = await self.uac.send(msg, sub.peer)
            if resp.status >= 300 and sub.active:
                log.info("%s: NOTIFY got %d, subscription ended", sub.aor, resp.status)
                self._remove(sub)

    def count(self) -> int:
        return len(self.dialogs)


def _now() -> float:
    return asyncio.get_running_loop().time()

