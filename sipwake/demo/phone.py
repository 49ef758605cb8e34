"""A simulated app's SIP side: a small user agent over UDP.

It registers (answering the digest challenge, with the app's RFC 8599 push parameters
in the Contact URI), places calls (407 answered, CANCEL, ACK, BYE), and takes what the
server sends it: INVITEs the story answers, MESSAGEs, NOTIFYs. A request the server
retransmits gets the same answer again. Enough SIP for the demo's story on loopback,
where nothing is lost: it does not retransmit its own requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass, field

from sipwake.sip.message import Message, make_response, parse

AUTO_ANSWER = ("OPTIONS", "NOTIFY", "BYE", "INFO", "UPDATE")  # 200 at once


def _hash(algorithm: str, text: str) -> str:
    fn = hashlib.sha256 if algorithm.upper() == "SHA-256" else hashlib.md5
    return fn(text.encode()).hexdigest()


def digest_authorization(challenge: str, method: str, uri: str, user: str,
                         password: str) -> str:
    """The answer to a Digest challenge (RFC 7616, qop=auth)."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.split(" ", 1)[1]))
    algorithm = params.get("algorithm", "MD5")
    cnonce = secrets.token_hex(8)
    ha1 = _hash(algorithm, f"{user}:{params['realm']}:{password}")
    ha2 = _hash(algorithm, f"{method}:{uri}")
    response = _hash(algorithm, f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}")
    opaque = f', opaque="{params["opaque"]}"' if "opaque" in params else ""
    return (f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
            f'uri="{uri}", response="{response}", algorithm={algorithm}, cnonce="{cnonce}", '
            f"qop=auth, nc=00000001{opaque}")  # fmt: skip


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, phone: Phone) -> None:
        self.phone = phone

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.phone._received(data)


@dataclass(eq=False)
class Phone:
    user: str
    password: str
    domain: str
    server: tuple[str, int]
    display: str = ""  # the name in From, shown by the callee's phone
    agent: str = "sipwake-demo"  # User-Agent
    requests: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    instance: str = field(default_factory=lambda: f"urn:uuid:{secrets.token_hex(16)}")

    async def start(self) -> Phone:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=("127.0.0.1", 0)
        )
        self.host, self.port = self._transport.get_extra_info("sockname")[:2]
        self.call_id = f"{secrets.token_hex(8)}@{self.user}.demo"
        self.tag = secrets.token_hex(4)
        self.cseq = 0
        self._pending: dict[str, asyncio.Queue[Message]] = {}  # branch → responses
        self._answered: dict[str, bytes] = {}  # branch of a request to us → our last answer
        return self

    def close(self) -> None:
        self._transport.close()

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    def contact(self, pn: str = "") -> str:
        return (f'<sip:{self.user}@{self.host}:{self.port};transport=udp{pn}>'
                f';+sip.instance="<{self.instance}>"')  # fmt: skip

    # -------------------------------------------------------------- the wire
    def _send(self, data: bytes) -> None:
        self._transport.sendto(data, self.server)

    def _received(self, data: bytes) -> None:
        try:
            msg = parse(data)
        except Exception:
            return  # nothing the server sends is malformed; a demo ignores it if it were
        if not msg.is_request:
            queue = self._pending.get(msg.top_via.branch)
            if queue is not None:
                queue.put_nowait(msg)
            return
        branch = f"{msg.top_via.branch}|{msg.method}"
        if branch in self._answered:  # a retransmission: the same answer again
            if self._answered[branch]:
                self._send(self._answered[branch])
            return
        self._answered[branch] = b""
        if msg.method in AUTO_ANSWER:
            self.reply(msg, 200)
        if msg.method == "CANCEL":
            self.reply(msg, 200)
        self.requests.put_nowait(msg)

    def reply(self, request: Message, status: int, body: bytes = b"", tag: str = "") -> None:
        """Answer a request the server sent us."""
        resp = make_response(request, status, to_tag=tag or None)
        if request.method == "INVITE" and 100 < status < 300:
            resp.add("Contact", f"<sip:{self.user}@{self.host}:{self.port};transport=udp>")
        if body:
            resp.add("Content-Type", "application/sdp")
            resp.body = body
        data = resp.to_bytes()
        self._answered[f"{request.top_via.branch}|{request.method}"] = data
        self._send(data)

    async def next_request(self, method: str) -> Message:
        """The next request of `method` the server sends us (others are dropped; the
        caller bounds the wait, as for every wait here)."""
        while True:
            req = await self.requests.get()
            if req.method == method:
                return req

    # ------------------------------------------------------------ our requests
    def _build(self, method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b"",
               to: str = "", call_id: str = "", cseq: int = 0) -> tuple[bytes, str]:
        if not cseq:
            self.cseq += 1
            cseq = self.cseq
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f'From: {f"{chr(34)}{self.display}{chr(34)} " if self.display else ""}'
            f"<{self.aor}>;tag={self.tag}",
            f"To: {to or (f'<{self.aor}>' if method == 'REGISTER' else f'<{uri}>')}",
            f"Call-ID: {call_id or self.call_id}",
            f"CSeq: {cseq} {method}",
            f"User-Agent: {self.agent}",
            *(f"{name}: {value}" for name, value in headers),
            f"Content-Length: {len(body)}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, branch

    async def _transact(self, data: bytes, branch: str) -> Message:
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._pending[branch] = queue
        try:
            self._send(data)
            while True:
                resp = await queue.get()
                if resp.status >= 200:
                    return resp
        finally:
            del self._pending[branch]

    async def request(self, method: str, uri: str, headers: list[tuple[str, str]],
                      body: bytes = b"") -> Message:
        """A request and its final answer, the digest challenge answered once."""
        resp = await self._transact(*self._build(method, uri, headers, body))
        if resp.status in (401, 407):
            challenge = resp.get("WWW-Authenticate" if resp.status == 401
                                 else "Proxy-Authenticate") or ""
            name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
            auth = digest_authorization(challenge, method, uri, self.user, self.password)
            resp = await self._transact(*self._build(method, uri, [*headers, (name, auth)], body))
        return resp

    async def register(self, pn: str = "", expires: int = 600) -> Message:
        return await self.request("REGISTER", f"sip:{self.domain}",
                                  [("Contact", self.contact(pn)), ("Expires", str(expires))])

    async def message(self, to: str, text: str) -> Message:
        return await self.request("MESSAGE", to, [("Content-Type", "text/plain;charset=utf-8")],
                                  text.encode())

    def call(self, to: str, offer: bytes) -> OutgoingCall:
        return OutgoingCall(self, to, offer)


class OutgoingCall:
    """An INVITE from a phone, from the 407 to the BYE."""

    def __init__(self, phone: Phone, target: str, offer: bytes) -> None:
        self.phone = phone
        self.target = target
        self.offer = offer
        self.call_id = f"{secrets.token_hex(8)}@{phone.user}.demo"
        self.responses: asyncio.Queue[Message] = asyncio.Queue()
        self.cseq = 0
        self.invite = b""
        self.branch = ""

    def _headers(self, auth: str = "") -> list[tuple[str, str]]:
        p = self.phone
        headers = [("Contact", f"<sip:{p.user}@{p.host}:{p.port};transport=udp>"),
                   ("Content-Type", "application/sdp")]
        return [*headers, ("Proxy-Authorization", auth)] if auth else headers

    def _start(self, auth: str = "") -> None:
        p = self.phone
        p.cseq += 1
        self.cseq = p.cseq
        self.invite, self.branch = p._build("INVITE", self.target, self._headers(auth),
                                            self.offer, call_id=self.call_id, cseq=self.cseq)
        p._pending[self.branch] = self.responses
        p._send(self.invite)

    async def start(self) -> Message:
        """INVITE; the 407 ACKed and answered; returns the first provisional or final
        answer after it."""
        self._start()
        first = await self._next()
        if first.status == 407:
            self._ack(first)
            challenge = first.get("Proxy-Authenticate") or ""
            p = self.phone
            auth = digest_authorization(challenge, "INVITE", self.target, p.user, p.password)
            del p._pending[self.branch]
            self._start(auth)
            first = await self._next()
        return first

    async def _next(self) -> Message:
        while True:
            resp = await self.responses.get()
            if resp.status > 100:
                return resp

    async def final(self) -> Message:
        while True:
            resp = await self.responses.get()
            if resp.status >= 200 and resp.cseq[1] == "INVITE":  # not the CANCEL's 200
                if resp.status >= 300:
                    self._ack(resp)
                return resp

    def _ack(self, resp: Message) -> None:
        """ACK of a non-2xx answer: same branch as the INVITE (RFC 3261 §17.1.1.3)."""
        via = self.invite.split(b"\r\n")[1].decode()
        lines = [f"ACK {self.target} SIP/2.0", via, "Max-Forwards: 70",
                 f"From: {resp.get('From')}", f"To: {resp.get('To')}",
                 f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} ACK", "Content-Length: 0"]
        self.phone._send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def cancel(self) -> None:
        lines = self.invite.split(b"\r\n\r\n")[0].decode().split("\r\n")
        keep = [line for line in lines[1:]
                if line.split(":", 1)[0].lower() in ("via", "from", "to", "call-id",
                                                     "max-forwards")]
        out = [f"CANCEL {self.target} SIP/2.0", *keep, f"CSeq: {self.cseq} CANCEL",
               "Content-Length: 0"]
        self.phone._send(("\r\n".join(out) + "\r\n\r\n").encode())

    def _in_dialog(self, method: str, ok: Message) -> tuple[bytes, str]:
        p = self.phone
        target = str(ok.contacts[0].uri) if ok.contacts else self.target
        routes = [("Route", r) for r in reversed(ok.get_all("Record-Route"))]
        cseq = self.cseq if method == "ACK" else self.cseq + 1
        data, branch = p._build(method, target, routes, to=ok.get("To") or "",
                                call_id=self.call_id, cseq=cseq)
        return data, branch

    def ack(self, ok: Message) -> None:
        self.phone._send(self._in_dialog("ACK", ok)[0])

    async def bye(self, ok: Message) -> Message:
        self.cseq += 1
        data, branch = self._in_dialog("BYE", ok)
        return await self.phone._transact(data, branch)
