"""A SIP node without sockets or real time, for unit tests of the services: the real
router and transaction layer on a ManualScheduler, with every message sent captured
instead of put on a wire. A test feeds requests and responses in (`receive`), reads
what went out (`sent`), and moves time itself (`scheduler.settle(seconds)`)."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field

from sipwake.router import Router
from sipwake.sip.message import Message, make_response, parse
from sipwake.sip.peer import Peer
from sipwake.sip.transaction import TransactionLayer
from sipwake.sip.uac import Uac
from sipwake.testing import ManualScheduler

US = ("192.0.2.1", 5060)  # the node's own address
_ports = itertools.count(40000)


@dataclass
class Sent:
    msg: Message
    peer: Peer


@dataclass
class SipNode:
    scheduler: ManualScheduler = field(default_factory=ManualScheduler)
    router: Router = field(default_factory=Router)
    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.transactions = TransactionLayer(self._send, self.router, self.scheduler)
        self.uac = Uac(lambda transport: US, self.transactions, self._send)

    def _send(self, msg: Message, peer: Peer) -> bool:
        # what goes out is read back as the far end would see it
        copy = parse(msg.to_bytes())
        copy.source = peer
        self.sent.append(Sent(copy, peer))
        return True

    def is_us(self, host: str, port: int | None, secure: bool = False) -> bool:
        return host == US[0] and (port or 5060) == US[1]

    def send(self, msg: Message, peer: Peer) -> bool:
        return self._send(msg, peer)

    def receive(self, data: bytes | Message, source: Peer) -> Message:
        msg = parse(data) if isinstance(data, bytes) else data
        msg.source = source
        self.transactions.receive(msg)
        return msg

    # ------------------------------------------------------------ reading
    def to(self, peer: Peer) -> list[Message]:
        return [s.msg for s in self.sent if s.peer == peer]

    def responses_to(self, peer: Peer) -> list[int]:
        """Statuses sent to `peer`, 100 Trying left out."""
        return [m.status for m in self.to(peer) if not m.method and m.status > 100]

    def requests_to(self, peer: Peer, method: str) -> list[Message]:
        return [m for m in self.to(peer) if m.method == method]

    def answer(self, request: Message, status: int, body: bytes = b"", tag: str = "dev") -> None:
        """The far end (where `request` went) answers it."""
        resp = make_response(request, status, to_tag=tag)
        if 100 < status < 300 and request.method == "INVITE":
            resp.add("Contact", f"<sip:dev@{request.source.host}:{request.source.port}>")
        if body:
            resp.add("Content-Type", "application/sdp")
            resp.body = body
        self.receive(resp, request.source)


def phone_peer() -> Peer:
    return Peer("udp", "198.51.100.7", next(_ports))


def request(
    method: str,
    uri: str,
    from_: str,
    to: str,
    source: Peer,
    body: bytes = b"",
    call_id: str = "",
    cseq: int = 1,
    branch: str = "",
    extra: str = "",
    to_tag: str = "",
) -> bytes:
    """A request as a phone at `source` sends it."""
    branch = branch or f"z9hG4bK{secrets.token_hex(6)}"
    call_id = call_id or f"{secrets.token_hex(6)}@test"
    to_value = f"<{to}>" + (f";tag={to_tag}" if to_tag else "")
    content = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source.host}:{source.port};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <{from_}>;tag=f{branch[-6:]}\r\nTo: {to_value}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:phone@{source.host}:{source.port}>\r\n{extra}{content}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
