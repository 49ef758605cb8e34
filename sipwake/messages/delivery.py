"""Delivering stored messages to a user's devices over SIP, in order, once per device.

Each device has one *lane*: a task that reads the messages not yet delivered to that
device (oldest first) and sends them to its binding, a few transactions in flight at
a time (`window`), marking each delivered on its 2xx. A lane runs when there is
something to deliver:
- a device registers (`registered`): its backlog goes out;
- a message arrives while the device has a live binding (`kick`): it goes out at
  once, after anything older that is still pending for that device.
One lane per device means a REGISTER refresh during a delivery never starts a
second one; a REGISTER from a new address (the app woke up elsewhere) restarts it
there. A timeout or an "unavailable" answer ends the lane; what it has not
delivered waits for the next registration. A device that refuses one message for
good (415, 403, …) gets the following ones anyway: a bad message must not block
the rest, and is not offered to that device again.

Per device the store keeps a cursor: every message up to it is done with (delivered
or refused for good), so a REGISTER refresh reads only what came after it, not the
whole retained inbox; a delivery above the cursor is recorded per message, so a
device that stopped answering mid-window is not sent what it already took.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from sipwake.lograte import LogRate
from sipwake.registrar.registrar import reach
from sipwake.sip.errors import SipParseError
from sipwake.sip.message import Message
from sipwake.sip.peer import Peer
from sipwake.sip.uac import Uac
from sipwake.sip.uri import URI, NameAddr
from sipwake.store.errors import unavailable
from sipwake.store.models import Binding, InboxMessage
from sipwake.timeline import NO_TRACE, Trace

log = logging.getLogger("sipwake.messages")

BATCH = 100  # messages read from the store at a time
WINDOW = 4  # transactions in flight per device ("one at a time or a small window")
# + any 5xx: stop, keep the rest for later (430: the flow went, cluster or RFC 5626 edge)
UNAVAILABLE = frozenset({408, 430, 480, 486})
UDP_MAX = 1300  # bytes: a bigger MESSAGE is not sent over UDP (RFC 3428 §9)


def device_key(binding: Binding) -> str:
    """What deliveries are tracked by: the push device, else the binding key
    (+sip.instance, or the contact). Stable across registrations."""
    return binding.device_id or binding.key


def _same_place(a: Binding, b: Binding) -> bool:
    return (a.contact, a.received, a.flow) == (b.contact, b.received, b.flow)


def build_request(
    uac: Uac,
    binding: Binding,
    from_uri: str,
    from_name: str,
    content_type: str,
    body: bytes,
    sent_at: float,
    content_encoding: str = "",
) -> tuple[Message, Peer]:
    """The MESSAGE for one binding (and its next hop): the sender in From, the body
    with its type and encoding as received, Date when it arrived."""
    where = reach(binding)
    try:
        sender = str(NameAddr(URI.parse(from_uri), from_name))
    except SipParseError:
        sender = "<sip:unknown@unknown.invalid>"
    headers = [("Route", r) for r in where.route]
    headers.append(("Content-Type", content_type))
    if content_encoding:
        headers.append(("Content-Encoding", content_encoding))
    headers.append(("Date", email.utils.formatdate(sent_at, usegmt=True)))
    msg = uac.new_request(
        "MESSAGE", where.request_uri, sender, f"<{binding.aor}>", body=body, headers=headers
    )
    return msg, where.peer


def stored_request(uac: Uac, binding: Binding, message: InboxMessage) -> tuple[Message, Peer]:
    return build_request(
        uac, binding, message.from_uri, message.from_name, message.content_type,
        message.body, message.received_at, message.content_encoding,
    )  # fmt: skip


def fits(msg: Message, peer: Peer) -> bool:
    """RFC 3428 §9: a MESSAGE over 1,300 bytes is not sent over UDP (no congestion
    control, and fragments get lost); it waits for a stream binding or the HTTP inbox."""
    return peer.transport != "udp" or len(msg.to_bytes()) <= UDP_MAX


@dataclass(eq=False, slots=True)
class Lane:
    aor: str
    device: str
    binding: Binding
    dirty: bool = False  # something new may be waiting: read again before stopping
    task: asyncio.Task[None] | None = None
    delivered: int = 0  # messages delivered by this lane (stats, tests)
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class DeliveryStore(Protocol):
    """The store, as deliveries use it."""

    async def undelivered_messages(
        self, aor: str, device: str, after: int = 0, limit: int = 100
    ) -> list[InboxMessage]: ...

    async def mark_delivered(self, message_id: int, device: str, at: float) -> None: ...

    async def delivery_cursor(self, aor: str, device: str) -> int: ...

    async def advance_cursor(self, aor: str, device: str, last_id: int) -> None: ...


class Courier:
    def __init__(
        self,
        store: DeliveryStore,
        uac: Uac,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        window: int = WINDOW,
        clock: Callable[[], float] = time.time,
        on_delivered: Callable[[str], None] = lambda aor: None,
        trace: Trace = NO_TRACE,
    ) -> None:
        self.trace = trace
        self.on_delivered = on_delivered  # called with the aor once deliveries are marked
        self.store = store
        self.uac = uac
        self.spawn = spawn
        self.window = window
        self.clock = clock
        self.lanes: dict[tuple[str, str], Lane] = {}
        # message id → resolved on the first 2xx from any device (the sender waits)
        self.waiters: dict[int, asyncio.Future[None]] = {}
        self.stopping = False  # the node is going: nothing new is sent
        # (aor, device) → {message id: delivered at}: 2xx answers the store could not
        # record yet; never sent again, recorded before that device's next delivery
        self._unmarked: dict[tuple[str, str], dict[int, float]] = {}
        self._outages = LogRate(60.0)
        # a cluster's other nodes are told of each delivery (their sender may wait)
        self.on_delivery: Callable[[int], None] | None = None
        self.deliveries = 0  # 2xx answers to deliveries, every device's (a metric)

    # ------------------------------------------------------------------ starting
    def registered(self, binding: Binding) -> None:
        """A device registered: deliver its backlog (restarting at its new address)."""
        self._start(binding, restart=True)

    def kick(self, binding: Binding) -> None:
        """Something new was stored for this live binding's user: deliver it."""
        self._start(binding, restart=False)

    def stop(self) -> None:
        """The node is stopping: no new sends (what is in flight still counts: its 2xx
        is marked, so nothing is delivered twice after the restart), and senders still
        waiting for a first delivery are told now (they answer 202)."""
        self.stopping = True
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(TimeoutError())
                waiter.exception()  # retrieved: nobody need await it

    def _start(self, binding: Binding, restart: bool) -> None:
        if self.stopping:
            return  # the phone registers with the next process, which delivers
        key = (binding.aor, device_key(binding))
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = Lane(binding.aor, key[1], binding)
        elif lane.task is not None:
            moved = not _same_place(lane.binding, binding)
            lane.binding = binding
            if not (restart and moved):
                lane.dirty = True  # the running lane reads again before it stops
                return
            # Its in-flight sends went to an address the app has left; they may still
            # time out for half a minute. Start over at the new one (what was in flight
            # is sent again: at least once, in order).
            lane.task.cancel()
        lane.binding = binding
        lane.dirty = False
        lane.idle.clear()
        lane.task = self.spawn(self._run(key, lane))

    async def _mark_again(self, key: tuple[str, str]) -> None:
        """Record the deliveries whose marks the store refused; raises while it still
        does (the lane stops; the next registration tries again)."""
        taken = self._unmarked.get(key)
        if not taken:
            return
        for message_id, at in list(taken.items()):
            await self.store.mark_delivered(message_id, key[1], at)
            del taken[message_id]
        del self._unmarked[key]

    def moved(self, binding: Binding) -> None:
        """The device registered with another node of a cluster, whose lane delivers
        from now on: ours stops (what it had in flight may arrive twice: at least
        once, as when a lane restarts at a new address)."""
        lane = self.lanes.get((binding.aor, device_key(binding)))
        if lane is not None and lane.task is not None:
            lane.task.cancel()

    def delivered_elsewhere(self, message_id: int) -> None:
        """A device took `message_id` (here, or through another node's lane)."""
        waiter = self.waiters.get(message_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def delivered(self, message_id: int) -> None:
        """Returns once some device answered 2xx to `message_id` (see `expect`); the
        caller bounds the wait (asyncio.timeout)."""
        future = self.waiters.get(message_id)
        if future is None:
            raise LookupError(f"nobody expects message {message_id}")
        try:
            await asyncio.shield(future)
        finally:
            self.waiters.pop(message_id, None)

    async def idle(self) -> None:
        """Until no lane runs (every send answered, every 2xx marked in the store)."""
        while self.lanes:
            await next(iter(self.lanes.values())).idle.wait()

    def can_take(self, binding: Binding, message: InboxMessage) -> bool:
        """Whether `message` can be sent to `binding` at all (not too big for UDP)."""
        return fits(*stored_request(self.uac, binding, message))

    def expect(self, message_id: int) -> None:
        """Somebody (the sender) will wait for `message_id`'s first delivery."""
        self.waiters[message_id] = asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------------ the lane
    async def _run(self, key: tuple[str, str], lane: Lane) -> None:
        me = asyncio.current_task()
        try:
            await self._mark_again(key)  # what this device took while the store failed
            after = await self.store.delivery_cursor(lane.aor, lane.device)
            while True:
                lane.dirty = False
                batch = await self.store.undelivered_messages(
                    lane.aor, lane.device, after, BATCH
                )
                taken = self._unmarked.get(key, {})
                batch = [m for m in batch if m.id not in taken]  # never sent twice
                if not batch:
                    if lane.dirty:
                        continue
                    return
                ok, done_upto = await self._send(lane, batch)
                if done_upto:
                    await self.store.advance_cursor(lane.aor, lane.device, done_upto)
                if not ok or self.stopping:
                    return
                after = batch[-1].id
        except Exception as exc:
            outage = unavailable(exc)
            if outage is None:
                log.exception("delivery to %s (%s) failed", lane.aor, lane.device)
            elif self._outages.due(outage.kind) is not None:
                log.warning("deliveries wait for the store (%s); the next registration "
                            "resumes them", outage)  # fmt: skip
        finally:
            if lane.task is me:  # not replaced by a restart
                lane.task = None
                lane.idle.set()
                if self.lanes.get(key) is lane:
                    del self.lanes[key]

    async def _send(self, lane: Lane, batch: list[InboxMessage]) -> tuple[bool, int]:
        """Send `batch` in order, `window` at a time. Returns whether the device kept
        answering (False: the rest stays for later) and the id up to which every
        message of the batch is done with (delivered, or refused for good), 0 if none:
        the device's cursor moves there."""
        answers: asyncio.Queue[tuple[InboxMessage, int]] = asyncio.Queue()
        marks: list[asyncio.Future[None]] = []
        marked: list[tuple[int, float]] = []  # (message id, when), in the order of marks
        done: set[int] = set()
        in_flight = 0
        ok = True

        def sent(message: InboxMessage) -> Callable[[Message], None]:
            def on_response(resp: Message) -> None:
                if resp.status >= 200:
                    answers.put_nowait((message, resp.status))

            return on_response

        async def settle_one() -> None:
            nonlocal in_flight, ok
            message, status = await answers.get()
            in_flight -= 1
            self.trace.record("message", str(message.id), "delivered" if 200 <= status < 300
                              else f"refused {status}", device=lane.device, status=status)
            if 200 <= status < 300:
                done.add(message.id)
                lane.delivered += 1
                self.deliveries += 1
                self.delivered_elsewhere(message.id)
                if self.on_delivery is not None:
                    self.on_delivery(message.id)
                at = self.clock()
                marked.append((message.id, at))
                marks.append(asyncio.ensure_future(
                    self.store.mark_delivered(message.id, lane.device, at)
                ))  # fmt: skip
            elif status in UNAVAILABLE or status >= 500:
                log.info("delivery of message %d to %s (%s): %d, stopping", message.id,
                         lane.aor, lane.device, status)
                ok = False
            else:  # 415, 488, 403…: asking again will not help; the next one may pass
                done.add(message.id)
                log.info("message %d refused by %s (%s): %d", message.id, lane.aor,
                         lane.device, status)

        try:
            for message in batch:
                while in_flight >= self.window and ok:
                    await settle_one()
                if not ok or self.stopping:
                    break
                msg, peer = stored_request(self.uac, lane.binding, message)
                if not fits(msg, peer):
                    # not done: it stays for a stream binding or the HTTP inbox; the
                    # device's cursor stops before it, the later ones still go
                    log.info("message %d to %s (%s): %d bytes, too big for UDP",
                             message.id, lane.aor, lane.device, len(msg.to_bytes()))  # fmt: skip
                    continue
                self.uac.start(msg, peer, sent(message))
                in_flight += 1
            while in_flight:  # their 2xx count even when we stop: marked, not resent
                await settle_one()
        finally:
            if marks:
                results = await asyncio.gather(*marks, return_exceptions=True)
                failed = {mid: at for (mid, at), r in zip(marked, results, strict=True)
                          if isinstance(r, BaseException)}  # fmt: skip
                if failed:  # delivered all the same: kept, marked on the next occasion
                    self._unmarked.setdefault((lane.aor, lane.device), {}).update(failed)
                self.on_delivered(lane.aor)
        upto = 0
        for message in batch:  # ids the query skipped were delivered or acknowledged
            if message.id not in done:
                break
            upto = message.id
        return ok, upto

    async def forward_once(
        self, bindings: list[Binding], from_uri: str, from_name: str, content_type: str,
        body: bytes, content_encoding: str = "",
    ) -> bool:
        """Send a message that is not stored (a typing indication) to every binding;
        True when one answers 2xx, False when all fail. The caller bounds the wait."""
        if not bindings:
            return False
        loop = asyncio.get_running_loop()
        first: asyncio.Future[bool] = loop.create_future()
        left = len(bindings)

        def on_response(resp: Message) -> None:
            nonlocal left
            if resp.status < 200 or first.done():
                return
            left -= 1
            if resp.status < 300:
                first.set_result(True)
            elif left == 0:
                first.set_result(False)

        for b in bindings:
            msg, peer = build_request(
                self.uac, b, from_uri, from_name, content_type, body, self.clock(),
                content_encoding,
            )  # fmt: skip
            if not fits(msg, peer):
                left -= 1
                continue
            self.uac.start(msg, peer, on_response)
        if left == 0:
            return False
        return await first
