"""Established calls: requests inside a dialog go to the other side.

A forked call that a device answered is a proxied dialog (we Record-Route, so BYE,
re-INVITE, UPDATE, INFO come through us and go to the other party's flow). A call
picked up explicitly is a bridge of two dialogs (we are the UA on both legs) whose
in-dialog requests are re-issued on the other leg. Bodies are never changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipwake.registrar.pn import strip_push_params
from sipwake.sip.message import Message, make_response
from sipwake.sip.peer import Peer
from sipwake.sip.proxy import forward_copy
from sipwake.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from sipwake.sip.uac import Uac

log = logging.getLogger("sipwake.calls.dialogs")

# headers that describe the body or the dialog's capabilities: copied across a bridge
_BODY_HEADERS = ("Content-Type", "Content-Disposition", "Content-Encoding", "Session-Expires",
                 "Supported", "Require", "Allow", "Reason", "Event", "Info-Package")  # fmt: skip


@dataclass(eq=False, init=False)
class ProxyDialog:
    call_id: str
    caller_tag: str
    callee_tag: str
    caller: Peer
    callee: Peer
    created: float  # Dialogs' clock

    def __init__(
        self, call_id: str, caller_tag: str, callee_tag: str, caller: Peer, callee: Peer
    ) -> None:  # written out, not generated: see speedups.py on dataclasses
        self.call_id = call_id
        self.caller_tag = caller_tag
        self.callee_tag = callee_tag
        self.caller = caller
        self.callee = callee
        self.created = 0.0


@dataclass(eq=False)
class Leg:
    """One side of a bridge, where we are the UAS of the dialog-forming INVITE."""

    call_id: str
    local_uri: str  # To of that INVITE, as we answered it (with our tag)
    remote_uri: str  # its From (with the peer's tag)
    remote_target: str  # the peer's Contact URI
    peer: Peer
    local_cseq: int = 1


@dataclass(eq=False)
class Bridge:
    a: Leg  # the caller
    b: Leg  # the device that picked up
    ended: bool = False
    created: float = 0.0  # Dialogs' clock

    def other(self, call_id: str) -> Leg:
        return self.b if call_id == self.a.call_id else self.a


class Dialogs:
    def __init__(self, uac: Uac, clock: Callable[[], float] = time.monotonic) -> None:
        self.uac = uac
        self.clock = clock
        self.by_call_id: dict[str, ProxyDialog | Bridge] = {}

    def __len__(self) -> int:
        return len(self.by_call_id)

    def add_proxy(self, dialog: ProxyDialog) -> None:
        dialog.created = self.clock()
        self.by_call_id[dialog.call_id] = dialog

    def add_bridge(self, bridge: Bridge) -> None:
        bridge.created = self.clock()
        self.by_call_id[bridge.a.call_id] = bridge
        self.by_call_id[bridge.b.call_id] = bridge

    def sweep(self, max_age: float) -> int:
        """Forget dialogs older than `max_age` seconds whose BYE never came (both ends
        crashed): nothing may grow without bound."""
        cutoff = self.clock() - max_age
        old = [cid for cid, d in self.by_call_id.items() if d.created < cutoff]
        for call_id in old:
            self.remove(call_id)
        return len(old)

    def remove(self, call_id: str) -> None:
        d = self.by_call_id.pop(call_id, None)
        if isinstance(d, Bridge):
            self.by_call_id.pop(d.other(call_id).call_id, None)

    # --------------------------------------------------------------- requests
    def request(self, st: ServerTransaction) -> None:
        """A request inside a dialog (our Route headers already removed)."""
        req = st.request
        d = self.by_call_id.get(req.call_id)
        if d is None:
            st.respond(make_response(req, 481))
            return
        if isinstance(d, ProxyDialog):
            self._proxy(d, st)
        else:
            self._bridge(d, st)

    def ack(self, ack: Message) -> bool:
        """An ACK for a 2xx: forwarded (proxy) or absorbed (bridge, we ACK ourselves)."""
        d = self.by_call_id.get(ack.call_id)
        if d is None:
            return False
        if isinstance(d, ProxyDialog):
            peer = d.callee if ack.from_tag == d.caller_tag else d.caller
            fwd = forward_copy(ack)
            scrub_contacts(fwd)
            fwd.add("Via", self.uac.via(peer), first=True)
            self.uac.send_stateless(fwd, peer)
        return True

    def _proxy(self, d: ProxyDialog, st: ServerTransaction) -> None:
        req = st.request
        peer = d.callee if req.from_tag == d.caller_tag else d.caller
        fwd = forward_copy(req)
        scrub_contacts(fwd)

        def on_response(resp: Message) -> None:
            resp.pop_first("Via")
            if resp.status == 100:
                return
            scrub_contacts(resp)
            st.respond(resp)
            if req.method == "BYE" and resp.status >= 200:
                self.remove(req.call_id)

        self.uac.start(fwd, peer, on_response)

    def _bridge(self, bridge: Bridge, st: ServerTransaction) -> None:
        req = st.request
        leg = bridge.other(req.call_id)
        leg.local_cseq += 1
        out = self.uac.new_request(
            req.method, leg.remote_target, leg.local_uri, leg.remote_uri,
            call_id=leg.call_id, cseq=leg.local_cseq, body=req.body,
        )  # fmt: skip
        for name in _BODY_HEADERS:
            for value in req.get_all(name):
                out.add(name, value)
        out.add("Contact", self.contact(leg.peer))

        def on_response(resp: Message) -> None:
            if resp.status == 100:
                return
            back = make_response(req, resp.status, resp.reason)
            back.body = resp.body
            for name in _BODY_HEADERS:
                for value in resp.get_all(name):
                    back.add(name, value)
            if 100 < resp.status < 300:
                back.add("Contact", self.contact(req.source))
            if req.method == "INVITE" and 200 <= resp.status < 300:
                self._ack(leg, resp)  # we are the UAC on that leg; the other side's ACK stops here
            st.respond(back)
            if req.method == "BYE" and resp.status >= 200:
                bridge.ended = True
                self.remove(req.call_id)

        self.uac.start(out, leg.peer, on_response)

    def _ack(self, leg: Leg, resp: Message) -> None:
        ack = self.uac.new_request(
            "ACK", leg.remote_target, leg.local_uri, leg.remote_uri,
            call_id=leg.call_id, cseq=resp.cseq[0],
        )  # fmt: skip
        ack.add("Via", self.uac.via(leg.peer), first=True)
        self.uac.send_stateless(ack, leg.peer)

    def bye(self, leg: Leg) -> None:
        """End one leg ourselves (e.g. a pickup whose ACK came without an answer)."""
        leg.local_cseq += 1
        bye = self.uac.new_request(
            "BYE", leg.remote_target, leg.local_uri, leg.remote_uri,
            call_id=leg.call_id, cseq=leg.local_cseq,
        )  # fmt: skip
        self.uac.start(bye, leg.peer, lambda resp: None)

    def contact(self, peer: Peer | None) -> str:
        transport = peer.transport if peer is not None else "udp"
        host, port = self.uac.local_address(transport)
        host = f"[{host}]" if ":" in host else host
        return f"<sip:sipwake@{host}:{port};transport={transport}>"


def scrub_contacts(msg: Message) -> None:
    """No pn-* in a Contact we pass on: a phone that puts its push parameters in every
    Contact (pjsua2's contactUriParams) must not hand its token to whoever it talks to."""
    if not any(h[0] == "contact" and "pn-" in h[2].lower() for h in msg.headers):
        return  # the usual answer: nothing to copy (nor a list to split)
    contacts = [c.copy() for c in msg.contacts]  # msg.contacts is its cached parse
    msg.remove("Contact")
    for c in contacts:
        c.uri.params = strip_push_params(c.uri.params)
        msg.add("Contact", str(c))
