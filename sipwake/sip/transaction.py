"""SIP transactions: RFC 3261 §17 with RFC 6026's Accepted states.

The layer sits between the transports and the transaction user (registrar/proxy
core). It owns retransmissions, request-retransmission absorption, the ACK for
non-2xx final responses, CANCEL answering (§9.2) and every transaction timer.

Design notes
- No asyncio Tasks: each transaction holds at most two scheduler handles (a
  retransmission timer: A/E/G, and a timeout timer: B/D/F/H/I/K/L/M). A zero-length
  timer (I/J/D/K on reliable transports) terminates the transaction at once instead of
  scheduling anything.
- Timer J is the exception: every completed non-INVITE transaction over UDP but a
  challenge (401/407: a retransmission is challenged afresh) waits the
  same 64*T1, so they queue in completion order and one timer sweeps them out, at most
  J_GRAIN late. At thousands of REGISTERs a second that is ~10^5 transactions lingering
  at any time; a scheduler handle each made the loop's timer heap their biggest cost.
- Matching is one dict look-up: server key (branch, sent-by, method) for RFC 3261
  branches (ACK looks up method INVITE, CANCEL looks up its own key and then the
  INVITE's), a longer tuple for RFC 2543 peers; client key (branch, CSeq method).
- A terminated transaction leaves its table and cancels its timers; `counts()` lets
  higher layers check that nothing leaks.

The TU must eventually give every server transaction a final response (the layer has
no timer for a request the TU sits on; a proxy runs Timer C itself). An INVITE client
transaction in Proceeding likewise waits for a final response until the TU cancels it
(then 64*T1 after the CANCEL it gives up with a synthesized 408, §9.1).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from sipwake.ids import random_hex
from sipwake.sip.errors import SipParseError
from sipwake.sip.message import Message, WireMessage, make_response
from sipwake.sip.peer import Peer
from sipwake.sip.uri import Via, split_unquoted
from sipwake.timing import Handle, Scheduler

__all__ = [
    "COOKIE",
    "J_GRAIN",
    "ClientTransaction",
    "ServerTransaction",
    "State",
    "Timers",
    "TransactionLayer",
    "TransactionUser",
    "make_ack",
    "make_cancel",
    "new_branch",
    "new_tag",
]

log = logging.getLogger("sipwake.sip.transaction")

COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7 magic cookie
# challenges are answered as a stateless UAS would (§8.2.7): a retransmission gets a
# fresh one, so nothing lingers for them (at REGISTER rates, half of what Timer J holds)
_STATELESS = frozenset({401, 407})
J_GRAIN = 0.25  # Timer J ends up to this much late: lingering transactions leave in batches

Key = tuple[str | int, ...]
# a completed non-INVITE transaction over UDP (TransactionLayer._done): its Timer J
# deadline, the response (bytes, status, reason) and the transport, host, port and flow
# it goes back to
_Done = tuple[float, bytes, int, str, str, str, int, str]


def new_branch(tag: str = "") -> str:
    """A fresh RFC 3261 Via branch (magic cookie, `tag`, 64 random bits). The tag
    names the worker of `serve --workers` that sent the request (cluster/)."""
    return COOKIE + tag + random_hex(8)


def new_tag() -> str:
    """A fresh From/To tag (48 random bits)."""
    return random_hex(6)


# ------------------------------------------------------------------ scheduling
# The layer runs on a `Scheduler` (sipwake.timing): the event loop, or in tests
# sipwake.testing.ManualScheduler.


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 §17.1.1.1 / Table 4 base values, in seconds. `d` is Timer D (unreliable)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0


DEFAULT_TIMERS = Timers()


# ------------------------------------------------------------------ the TU side
class TransactionUser(Protocol):
    def on_request(self, st: ServerTransaction) -> None:
        """A new request (not ACK, not CANCEL, not a retransmission)."""

    def on_cancel(self, invite: ServerTransaction) -> None:
        """A CANCEL matched `invite`, which has no final response yet; the layer already
        answered the CANCEL with 200, the TU must now send the final (usually 487)."""

    def on_ack(self, ack: Message) -> None:
        """An ACK matching no server transaction in Completed/Confirmed (an ACK for 2xx)."""

    def on_stray_response(self, resp: Message) -> None:
        """A response matching no client transaction."""


class State(StrEnum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


CALLING = State.CALLING
TRYING = State.TRYING
PROCEEDING = State.PROCEEDING
ACCEPTED = State.ACCEPTED
COMPLETED = State.COMPLETED
CONFIRMED = State.CONFIRMED
TERMINATED = State.TERMINATED


# ------------------------------------------------------------------ building
def _top_via_text(request: Message) -> str:
    for h in request.headers:
        if h[0] == "via":
            value = h[2]
            return split_unquoted(value, ",")[0].strip() if "," in value else value
    return ""


def _hop_request(invite: Message, method: str, to_value: str) -> Message:
    """ACK/CANCEL skeleton shared by §9.1 and §17.1.1.3."""
    msg = Message(method=method, uri=invite.uri)
    headers = msg.headers
    headers.append(("via", "Via", _top_via_text(invite)))
    max_forwards = "70"
    from_value = call_id = ""
    for h in invite.headers:
        key = h[0]
        if key == "route":
            headers.append(h)
        elif key == "max-forwards":
            max_forwards = h[2]
        elif key == "from":
            from_value = h[2]
        elif key == "call-id":
            call_id = h[2]
    headers.append(("max-forwards", "Max-Forwards", max_forwards))
    headers.append(("from", "From", from_value))
    headers.append(("to", "To", to_value))
    headers.append(("call-id", "Call-ID", call_id))
    headers.append(("cseq", "CSeq", f"{invite.cseq[0]} {method}"))
    return msg


def make_cancel(invite: Message, reason: str | None = None) -> Message:
    """CANCEL for `invite` per RFC 3261 §9.1 (plus an optional RFC 3326 Reason value)."""
    cancel = _hop_request(invite, "CANCEL", invite.get("to") or "")
    if reason:
        cancel.headers.append(("reason", "Reason", reason))
    return cancel


def make_ack(invite: Message, response: Message) -> Message:
    """ACK for a non-2xx final response to `invite` per RFC 3261 §17.1.1.3."""
    return _hop_request(invite, "ACK", response.get("to") or "")


def _server_key(msg: Message, via: Via, method: str, to_tag: str | None = None) -> Key:
    """§17.2.3: branch + sent-by + method; RFC 2543 fallback for cookie-less branches."""
    branch = via.branch
    if branch.startswith(COOKIE):
        return (branch, via.sent_by, method)
    return (
        msg.uri,
        msg.to_tag if to_tag is None else to_tag,
        msg.from_tag,
        msg.call_id,
        msg.cseq[0],
        via.sent_by,
        branch,
        method,
    )


# ------------------------------------------------------------------ transactions
class _Transaction:
    __slots__ = ("_interval", "_layer", "_retx", "_tmo", "key", "reliable", "request", "state")

    _layer: TransactionLayer
    _retx: Handle | None  # A / E / G
    _tmo: Handle | None  # B / D / F / H / I / J / K / L / M, §9.1 give-up
    _interval: float
    key: Key
    reliable: bool
    request: Message
    state: State

    def _arm_retx(self, delay: float) -> None:
        layer = self._layer
        layer._ntimers += 1
        self._retx = layer._sched.call_later(delay, self._fire_retx)

    def _arm_tmo(self, delay: float) -> None:
        layer = self._layer
        layer._ntimers += 1
        self._tmo = layer._sched.call_later(delay, self._fire_tmo)

    def _stop_timers(self) -> None:
        if self._retx is not None:
            self._retx.cancel()
            self._retx = None
            self._layer._ntimers -= 1
        if self._tmo is not None:
            self._tmo.cancel()
            self._tmo = None
            self._layer._ntimers -= 1

    def _fire_retx(self) -> None:
        raise NotImplementedError

    def _fire_tmo(self) -> None:
        raise NotImplementedError

    def _unlink(self, table: dict[Key, Any]) -> None:
        self.state = TERMINATED
        self._stop_timers()
        if table.get(self.key) is self:
            del table[self.key]


class ServerTransaction(_Transaction):
    """One server transaction (§17.2). The TU answers through `respond()`."""

    __slots__ = ("cancel_reason", "invite", "last_response")

    def __init__(self, layer: TransactionLayer, request: Message, key: Key) -> None:
        self._layer = layer
        self.request = request
        self.key = key
        self.invite = request.method == "INVITE"
        self.state = PROCEEDING if self.invite else TRYING
        self.last_response: Message | None = None
        self.cancel_reason = ""  # the Reason (RFC 3326) of a CANCEL that matched it
        self._retx = None
        self._tmo = None
        self._interval = 0.0
        source = request.source
        self.reliable = bool(source is not None and source.reliable)

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.request.method} {self.state} {self.key[0]!r}>"

    def reply(self, status: int, reason: str | None = None) -> None:
        """A final answer of our own, as a UAS gives it: with a To tag (§8.2.6.2)."""
        self.respond(make_response(self.request, status, reason, to_tag=new_tag()))

    def respond(self, resp: Message) -> None:
        """Send a response for this request (the TU adds To tags etc. itself)."""
        status = resp.status
        if not 100 <= status <= 699:
            raise ValueError(f"not a response status: {status}")
        state = self.state
        if self.invite:
            if state is PROCEEDING:
                if not self._send(resp):
                    return
                self.last_response = resp
                if status < 200:
                    return
                layer = self._layer
                if status < 300:
                    # RFC 6026 §7.1: the TU retransmits the 2xx; we absorb INVITEs for Timer L
                    self.state = ACCEPTED
                    self._arm_tmo(layer._t64)
                    return
                self.state = COMPLETED
                if not self.reliable:
                    self._interval = layer.timers.t1
                    self._arm_retx(self._interval)  # Timer G
                self._arm_tmo(layer._t64)  # Timer H
                return
            if state is ACCEPTED and 200 <= status < 300:
                # RFC 6026 §8.7: 2xx retransmissions (or other forks' 2xx) from the TU go out.
                # Accepted has no transport-error exit: stay, so INVITE copies stay absorbed.
                if self._layer._transmit(resp, self.request.source):
                    self.last_response = resp
                else:
                    log.info("%r: transport error resending %d", self, status)
                return
        elif state is TRYING or state is PROCEEDING:
            if not self._send(resp):
                return
            self.last_response = resp
            if status < 200:
                self.state = PROCEEDING
                return
            self.state = COMPLETED
            if self.reliable or status in _STATELESS:
                self._terminate()  # Timer J = 0
            else:
                self._layer._linger(self, resp)  # Timer J
            return
        log.debug("%r: dropping %d from the TU in state %s", self, status, state)

    def _send(self, msg: Message) -> bool:
        if self._layer._transmit(msg, self.request.source):
            return True
        log.info("%r: transport error sending %d to %s, terminated",
                 self, msg.status, self.request.source)  # fmt: skip
        self._terminate()
        return False

    def _terminate(self) -> None:
        self._unlink(self._layer._servers)

    def _retransmitted(self) -> None:
        """The request came again: answer with the last response where the RFC says so."""
        state = self.state
        if state is PROCEEDING or state is COMPLETED:
            resp = self.last_response
            if resp is not None:
                self._send(resp)
        # TRYING (nothing to resend), ACCEPTED (RFC 6026 absorbs), CONFIRMED: absorb

    def _ack(self, ack: Message) -> None:
        state = self.state
        if state is COMPLETED:
            self.state = CONFIRMED
            self._stop_timers()  # G and H
            if self.reliable:
                self._terminate()  # Timer I = 0
            else:
                self._arm_tmo(self._layer.timers.t4)  # Timer I
        elif state is ACCEPTED:
            self._layer._tu.on_ack(ack)  # RFC 6026 §7.1: ACKs in Accepted go to the TU
        elif state is not CONFIRMED:
            log.debug("%r: ACK before any final response, dropped", self)

    def _fire_retx(self) -> None:  # Timer G
        self._retx = None
        self._layer._ntimers -= 1
        resp = self.last_response
        if self.state is not COMPLETED or resp is None:
            return
        if not self._send(resp):
            return
        self._interval = min(self._interval * 2, self._layer.timers.t2)
        self._arm_retx(self._interval)

    def _fire_tmo(self) -> None:  # Timer H / I / J / L
        self._tmo = None
        self._layer._ntimers -= 1
        if self.state is COMPLETED and self.invite:
            log.info("%r: Timer H, no ACK for %s", self,
                     self.last_response.status if self.last_response else "?")  # fmt: skip
        self._terminate()


def _ignore(resp: Message) -> None:
    pass


_CANCEL_NONE = 0
_CANCEL_PENDING = 1
_CANCEL_SENT = 2


class ClientTransaction(_Transaction):
    """One client transaction (§17.1). Responses go to the `on_response` callback."""

    __slots__ = ("_ack", "_cancel", "_cancel_reason", "_final", "_on_response", "dest", "invite")

    def __init__(
        self,
        layer: TransactionLayer,
        request: Message,
        dest: Peer,
        on_response: Callable[[Message], None],
        key: Key,
    ) -> None:
        self._layer = layer
        self.request = request
        self.dest = dest
        self.key = key
        self.invite = request.method == "INVITE"
        self.state = CALLING if self.invite else TRYING
        self.reliable = dest.reliable
        self._on_response = on_response
        self._retx = None
        self._tmo = None
        self._interval = 0.0
        self._final = False
        self._ack: Message | None = None
        self._cancel = _CANCEL_NONE
        self._cancel_reason: str | None = None

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.request.method} {self.state} {self.key[0]!r}>"

    @property
    def final_received(self) -> bool:
        """Whether the callback has had a final response (real or synthesized)."""
        return self._final

    def cancel(self, reason: str | None = None) -> None:
        """Cancel an INVITE (§9.1): the CANCEL goes out once a provisional has arrived.

        No effect after a final response, on a second call, or for non-INVITE requests.
        `reason` is a Reason header value, e.g. 'SIP;cause=200;text="Call completed elsewhere"'.
        """
        if not self.invite or self._final or self._cancel != _CANCEL_NONE:
            return
        self._cancel_reason = reason
        if self.state is CALLING:
            self._cancel = _CANCEL_PENDING
        elif self.state is PROCEEDING:
            self._send_cancel()

    def _send_cancel(self) -> None:
        self._cancel = _CANCEL_SENT
        cancel = make_cancel(self.request, self._cancel_reason)
        layer = self._layer
        try:
            layer.request(cancel, self.dest, self._cancel_answered)
        except ValueError as exc:
            log.info("%r: CANCEL not sent: %s", self, exc)
            return
        # §9.1: no final 64*T1 after the CANCEL -> consider the INVITE gone
        if self._tmo is None and self.state is PROCEEDING:
            self._arm_tmo(layer._t64)

    def _cancel_answered(self, resp: Message) -> None:
        if resp.status >= 200:
            log.debug("%r: CANCEL answered %d", self, resp.status)

    def _start(self) -> None:
        layer = self._layer
        if not layer._transmit(self.request, self.dest):
            log.info("%r: transport error sending to %s", self, self.dest)
            self._terminate()
            # deliver the 503 later so the callback never runs before request() returns
            layer._ntimers += 1
            self._tmo = layer._sched.call_later(0.0, self._fire_transport_error)
            return
        if not self.reliable:
            self._interval = layer.timers.t1
            self._arm_retx(self._interval)  # Timer A / E
        self._arm_tmo(layer._t64)  # Timer B / F

    def _terminate(self) -> None:
        self._unlink(self._layer._clients)

    def _deliver(self, resp: Message) -> None:
        try:
            self._on_response(resp)
        except Exception:
            log.exception("%r: response callback failed on %d", self, resp.status)
        if self._final and self.state is TERMINATED:
            self._release()

    def _release(self) -> None:
        """Nothing more reaches the TU: let go of its callback. It usually holds the TU's
        state, which holds this transaction: a cycle only a full collection would free."""
        self._on_response = _ignore

    def _deliver_final(self, resp: Message) -> None:
        if not self._final:
            self._final = True
            self._deliver(resp)

    def _synthesize(self, status: int) -> Message:
        resp = make_response(self.request, status)
        resp.source = None
        return resp

    def _fail(self, status: int) -> None:
        self._terminate()
        self._deliver_final(self._synthesize(status))

    def _received(self, resp: Message) -> None:
        status = resp.status
        state = self.state
        if self.invite:
            if state is CALLING or state is PROCEEDING:
                if status < 200:
                    if state is CALLING:
                        self.state = PROCEEDING
                        self._stop_timers()  # A and B
                        if self._cancel == _CANCEL_PENDING:
                            self._send_cancel()
                    self._deliver(resp)
                    return
                self._stop_timers()
                self._final = True
                if status < 300:
                    self.state = ACCEPTED  # RFC 6026: the TU ACKs 2xx; absorb for Timer M
                    self._arm_tmo(self._layer._t64)
                    self._deliver(resp)
                    return
                self.state = COMPLETED
                self._ack = make_ack(self.request, resp)
                if not self._layer._transmit(self._ack, self.dest):
                    log.info("%r: transport error sending ACK to %s", self, self.dest)
                    self._terminate()
                elif self.reliable:
                    self._terminate()  # Timer D = 0
                else:
                    self._arm_tmo(self._layer.timers.d)  # Timer D
                self._deliver(resp)
                return
            if state is ACCEPTED:
                if 200 <= status < 300:
                    self._deliver(resp)  # retransmitted 2xx, or another fork's 2xx
                return
            if state is COMPLETED and status >= 300 and self._ack is not None:
                if not self._layer._transmit(self._ack, self.dest):
                    self._terminate()
            return
        if state is TRYING or state is PROCEEDING:
            if status < 200:
                self.state = PROCEEDING
                self._deliver(resp)
                return
            self.state = COMPLETED
            self._stop_timers()  # E and F
            self._final = True
            if self.reliable:
                self._terminate()  # Timer K = 0
            else:
                self._arm_tmo(self._layer.timers.t4)  # Timer K
            self._deliver(resp)
        # COMPLETED: retransmitted final, absorbed

    def _fire_retx(self) -> None:  # Timer A / E
        self._retx = None
        layer = self._layer
        layer._ntimers -= 1
        state = self.state
        if state is CALLING:
            interval = self._interval * 2
        elif state is TRYING:
            interval = min(self._interval * 2, layer.timers.t2)
        elif state is PROCEEDING and not self.invite:
            interval = layer.timers.t2
        else:
            return
        if not layer._transmit(self.request, self.dest):
            log.info("%r: transport error retransmitting to %s", self, self.dest)
            self._fail(503)
            return
        self._interval = interval
        self._arm_retx(interval)

    def _fire_tmo(self) -> None:  # Timer B / F / §9.1 give-up, or D / K / M
        self._tmo = None
        self._layer._ntimers -= 1
        state = self.state
        if state is CALLING or state is TRYING or state is PROCEEDING:
            log.info("%r: timeout, no final response from %s", self, self.dest)
            self._fail(408)
        else:
            self._terminate()
            self._release()

    def _fire_transport_error(self) -> None:
        self._tmo = None
        self._layer._ntimers -= 1
        self._deliver_final(self._synthesize(503))


# ------------------------------------------------------------------ the layer
class TransactionLayer:
    """Matches messages to transactions and runs them. See the module docstring."""

    __slots__ = (
        "_clients", "_done", "_lingering", "_ntimers", "_sched", "_send", "_servers", "_sweeper",
        "_t64", "_tu", "on_drained", "timers",
    )  # fmt: skip

    def __init__(
        self,
        send: Callable[[Message, Peer], bool],
        tu: TransactionUser,
        scheduler: Scheduler,
        timers: Timers = DEFAULT_TIMERS,
    ) -> None:
        self._send = send
        self._tu = tu
        self._sched = scheduler
        self.timers = timers
        self._t64 = 64 * timers.t1
        self._servers: dict[Key, ServerTransaction] = {}
        self._clients: dict[Key, ClientTransaction] = {}
        self._ntimers = 0
        # Completed non-INVITE UDP transactions (Timer J), by key: the response to send
        # again and where, as a tuple of plain values. At REGISTER rates ~10^5 linger;
        # as objects (the transaction, messages, a Peer) they were most of the server's
        # memory, and a full collection walked them all, a pause of a tenth of a second
        # or more under load. Tuples of strings, bytes and numbers the collector stops
        # tracking. A retransmission gets the bytes again, unparsed.
        self._done: dict[Key, _Done] = {}
        # their keys with their Timer J deadline, oldest first
        self._lingering: deque[tuple[float, Key]] = deque()
        self._sweeper: Handle | None = None
        # called when the last of them has gone (sipwake.heap gives the memory back)
        self.on_drained: Callable[[], None] | None = None

    def counts(self) -> dict[str, int]:
        """Live server and client transactions and pending timers (all 0 when idle)."""
        return {
            "server": len(self._servers) + len(self._done),
            "client": len(self._clients),
            "timers": self._ntimers,
        }

    def close(self) -> None:
        """Shutdown: drop every live transaction and cancel its timers, without callbacks."""
        for st in list(self._servers.values()):
            st._terminate()
        for ct in list(self._clients.values()):
            ct._final = True
            ct._terminate()
            ct._release()
        self._lingering.clear()
        self._done.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
            self._ntimers -= 1

    # ------------------------------------------------------------------ Timer J
    def _linger(self, st: ServerTransaction, resp: Message) -> None:
        """`st` has its final response: only the response's bytes stay (see _done)."""
        if self._servers.get(st.key) is st:
            del self._servers[st.key]
        peer: Peer | None = st.request.source
        # no source: not from a transport (tests), nowhere in particular
        transport, host, port, flow = ("", "", 0, "") if peer is None else (
            peer.transport, peer.host, peer.port, peer.flow)  # fmt: skip
        deadline = self._sched.time() + self._t64
        self._done[st.key] = (deadline, resp.to_bytes(), resp.status, resp.reason,
                              transport, host, port, flow)  # fmt: skip
        self._lingering.append((deadline, st.key))
        if self._sweeper is None:
            self._arm_sweeper(self._t64)

    def _resend(self, key: Key, done: _Done) -> None:
        """A request came again to a completed transaction: its response again."""
        _, wire, status, reason, transport, host, port, flow = done
        peer = Peer(transport, host, port, flow) if transport else None
        if not self._transmit(WireMessage(status, reason, wire), peer):
            log.info("transport error resending %d to %s:%s, transaction ended",
                     status, host, port)  # fmt: skip
            del self._done[key]

    def _arm_sweeper(self, delay: float) -> None:
        self._ntimers += 1
        self._sweeper = self._sched.call_later(delay + J_GRAIN, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        self._ntimers -= 1
        lingering = self._lingering
        now = self._sched.time()
        done = self._done
        while lingering and lingering[0][0] <= now:
            deadline, key = lingering.popleft()
            entry = done.get(key)
            if entry is not None and entry[0] == deadline:  # not ended otherwise meanwhile
                del done[key]
        if lingering:
            self._arm_sweeper(lingering[0][0] - now)
        elif self.on_drained is not None:
            self.on_drained()  # a burst is over: what it held is free

    def _transmit(self, msg: Message, peer: Any) -> bool:
        try:
            return self._send(msg, peer)
        except Exception:
            log.exception("send failed for %r to %s", msg, peer)
            return False

    # ---------------------------------------------------------------- client side
    def request(
        self, msg: Message, dest: Peer, on_response: Callable[[Message], None]
    ) -> ClientTransaction:
        """Start a client transaction for a fully formed request (top Via with a fresh
        branch from `new_branch()`). Never for ACK. `on_response` gets every provisional,
        the final (or a synthesized 408 on timeout / 503 on transport error, with source
        None) exactly once, and for INVITE any further 2xx while Accepted. It is never
        called before `request()` returns.
        """
        method = msg.method
        if not method or method == "ACK":
            raise ValueError("request() takes a request other than ACK")
        branch = msg.top_via.branch
        if not branch.startswith(COOKIE):
            raise ValueError(f"top Via branch {branch!r} lacks the {COOKIE} cookie")
        key: Key = (branch, msg.cseq[1])
        if key in self._clients:
            raise ValueError(f"a client transaction with branch {branch!r} already exists")
        ct = ClientTransaction(self, msg, dest, on_response, key)
        self._clients[key] = ct
        ct._start()
        return ct

    # ---------------------------------------------------------------- receiving
    def receive(self, msg: Message) -> None:
        """Entry point for every parsed incoming message. Never raises."""
        try:
            if msg.method:
                self._receive_request(msg)
            else:
                self._receive_response(msg)
        except SipParseError as exc:
            log.info("unmatchable message %r dropped: %s", msg, exc)
        except Exception:
            log.exception("transaction layer failed on %r", msg)

    def _receive_response(self, resp: Message) -> None:
        ct = self._clients.get((resp.top_via.branch, resp.cseq[1]))
        if ct is None:
            self._tu.on_stray_response(resp)
        else:
            ct._received(resp)

    def _receive_request(self, msg: Message) -> None:
        method = msg.method
        via = msg.top_via
        servers = self._servers
        if method == "ACK":
            st = servers.get(_server_key(msg, via, "INVITE"))
            if st is None and not via.branch.startswith(COOKIE) and msg.to_tag:
                # RFC 2543: the INVITE had no To tag; the ACK carries our response's
                st = servers.get(_server_key(msg, via, "INVITE", ""))
                if st is not None and (
                    st.last_response is None or st.last_response.to_tag != msg.to_tag
                ):
                    st = None
            if st is None:
                self._tu.on_ack(msg)
            else:
                st._ack(msg)
            return
        key = _server_key(msg, via, method)
        st = servers.get(key)
        if st is not None:
            st._retransmitted()
            return
        done = self._done.get(key)
        if done is not None:
            self._resend(key, done)
            return
        st = ServerTransaction(self, msg, key)
        servers[key] = st
        if method == "CANCEL":
            self._cancel(st, servers.get(_server_key(msg, via, "INVITE")))
            return
        if st.invite:
            trying = make_response(msg, 100)
            timestamp = msg.get("timestamp")
            if timestamp is not None:
                trying.headers.append(("timestamp", "Timestamp", timestamp))  # §8.2.6.1
            st.respond(trying)
            if st.state is TERMINATED:
                return  # transport error: nobody to answer
        try:
            self._tu.on_request(st)
        except Exception:
            log.exception("TU failed on %r", msg)
            if st.state is TRYING or st.state is PROCEEDING:
                st.respond(make_response(msg, 500, to_tag=new_tag()))

    def _cancel(self, cancel_st: ServerTransaction, invite: ServerTransaction | None) -> None:
        """§9.2: 481 when nothing matches; else 200, and the TU hears of it while the
        INVITE still has no final response. A CANCEL matching an INVITE that already has
        its final response gets 200 too ("as long as the CANCEL matched an existing
        transaction, the UAS answers the CANCEL request itself with a 200") but has no
        effect; once the INVITE transaction is gone it is 481."""
        request = cancel_st.request
        if invite is None or invite.state is TERMINATED:
            cancel_st.respond(make_response(request, 481, to_tag=new_tag()))
            return
        last = invite.last_response
        tag = last.to_tag if last is not None and last.to_tag else new_tag()  # §9.2: same tag
        cancel_st.respond(make_response(request, 200, to_tag=tag))
        if invite.state is PROCEEDING:
            invite.cancel_reason = request.get("Reason") or ""
            self._tu.on_cancel(invite)
