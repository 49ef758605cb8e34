"""A small SIP user agent for tests: sends requests over UDP, TCP, TLS or a WebSocket
(aiohttp's client, RFC 7118), awaits responses,
answers digest challenges. Written independently of the server's digest code so a
bug there can't hide in both."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import secrets
import ssl
from dataclasses import dataclass, field

import aiohttp

from sipwake.sip.errors import SipParseError
from sipwake.sip.message import Message, parse

_counter = itertools.count(1)


def _h(algorithm: str, text: str) -> str:
    fn = hashlib.sha256 if algorithm.upper() == "SHA-256" else hashlib.md5
    return fn(text.encode()).hexdigest()


def digest_header(
    challenge: str, method: str, uri: str, user: str, password: str, nc: int = 1
) -> str:
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.split(" ", 1)[1]))
    algorithm = params.get("algorithm", "MD5")
    realm, nonce = params["realm"], params["nonce"]
    cnonce = secrets.token_hex(8)
    ha1 = _h(algorithm, f"{user}:{realm}:{password}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    ncs = f"{nc:08x}"
    response = _h(algorithm, f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
    opaque = f', opaque="{params["opaque"]}"' if "opaque" in params else ""
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, cnonce="{cnonce}", qop=auth, '
        f"nc={ncs}{opaque}"
    )


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.agent._incoming(data)


class _TcpClient(asyncio.Protocol):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            self.buf = self.buf.lstrip(b"\r\n")
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            m = re.search(rb"\r\n(?:Content-Length|l)\s*:\s*(\d+)", self.buf[:end], re.I)
            total = end + 4 + (int(m.group(1)) if m else 0)
            if len(self.buf) < total:
                return
            data, self.buf = self.buf[:total], self.buf[total:]
            self.agent._incoming(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.agent.closed.set()


def _insecure_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test server's cert is self-signed
    return ctx


@dataclass
class Agent:
    """One SIP endpoint (a phone). `requests` collects requests sent to it."""

    user: str
    password: str
    domain: str
    server: tuple[str, int]
    transport: str = "udp"
    auth_user: str = ""  # digest username when it differs from the AOR's user
    local_host: str = "127.0.0.1"  # another loopback address is another source
    requests: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    wire: list[bytes] = field(default_factory=list)  # every message received, as it came

    async def start(self) -> Agent:
        loop = asyncio.get_running_loop()
        self._pending: dict[str, asyncio.Queue[Message]] = {}
        if self.transport in ("ws", "wss"):
            await self._start_ws()
            return self
        if self.transport == "udp":
            t, _ = await loop.create_datagram_endpoint(
                lambda: _UdpClient(self), local_addr=(self.local_host, 0)
            )
            self._send = lambda data: t.sendto(data, self.server)
        else:
            ctx = _insecure_tls() if self.transport == "tls" else None
            t, _ = await loop.create_connection(
                lambda: _TcpClient(self), *self.server, ssl=ctx, local_addr=(self.local_host, 0)
            )
            self._send = t.write
        self._t = t
        self.local = t.get_extra_info("sockname")[:2]
        self.call_id = f"{secrets.token_hex(6)}@test"
        self.cseq = 0
        self.tag = secrets.token_hex(4)
        return self

    async def _start_ws(self) -> None:
        self._session = aiohttp.ClientSession()
        host, port = self.server
        self._ws = await self._session.ws_connect(
            f"{self.transport}://{host}:{port}/",
            protocols=("sip",),
            ssl=_insecure_tls() if self.transport == "wss" else True,
        )
        # RFC 7118 §5.2: a browser can't know its address; Via and Contact name .invalid
        self.local = (f"{secrets.token_hex(6)}.invalid", 9)
        self.call_id = f"{secrets.token_hex(6)}@test"
        self.cseq = 0
        self.tag = secrets.token_hex(4)
        self._pending = {}
        self._reader = asyncio.ensure_future(self._read_ws())
        sends: list[asyncio.Future[None]] = []
        self._send = lambda data: sends.append(asyncio.ensure_future(self._ws.send_str(data.decode())))

    async def _read_ws(self) -> None:
        async for frame in self._ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                self._incoming(frame.data.encode())
            elif frame.type == aiohttp.WSMsgType.BINARY:
                self._incoming(frame.data)
        self.closed.set()

    def close(self) -> None:
        if self.transport in ("ws", "wss"):
            self._reader.cancel()
            self._closing = asyncio.ensure_future(self._close_ws())  # the fixture's stop awaits
            return
        self._t.close()

    async def _close_ws(self) -> None:
        await self._ws.close()
        await self._session.close()

    def _incoming(self, data: bytes) -> None:
        self.wire.append(data)
        try:
            msg = parse(data, stream=self.transport in ("tcp", "tls"))
            branch = "" if msg.method else msg.top_via.branch
        except SipParseError:
            return  # e.g. a 400 that echoes the malformed header we sent
        if msg.method:
            self.requests.put_nowait(msg)
            return
        q = self._pending.get(branch)
        if q is not None:
            q.put_nowait(msg)

    def send_raw(self, data: bytes) -> None:
        self._send(data)

    def build(
        self, method: str, uri: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[bytes, str]:
        self.cseq += 1
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        host, port = self.local
        proto = self.transport.upper()
        standard = {
            "Via": f"SIP/2.0/{proto} {host}:{port};branch={branch};rport",
            "Max-Forwards": "70",
            "From": f"<sip:{self.user}@{self.domain}>;tag={self.tag}",
            # a REGISTER's To is the AOR registered; any other request's, its target
            "To": f"<sip:{self.user}@{self.domain}>" if method == "REGISTER" else f"<{uri}>",
            "Call-ID": self.call_id,
            "CSeq": f"{self.cseq} {method}",
        }
        extra = dict(headers or {})
        lines = [f"{method} {uri} SIP/2.0"]
        for name, value in standard.items():
            if name == "Via" and "Via" in extra:
                lines.append(f"Via: {value}")  # ours on top, the given one below
                lines.append(f"Via: {extra.pop('Via')}")
                continue
            lines.append(f"{name}: {extra.pop(name, value)}")
        lines += [f"{k}: {v}" for k, v in extra.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, branch

    async def request(
        self,
        method: str,
        uri: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 5.0,
    ) -> Message:
        """Send a request, answer one digest challenge, return the final response."""
        data, branch = self.build(method, uri, headers, body)
        resp = await self._transact(data, branch, timeout)
        if resp.status in (401, 407):
            name = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            auth_name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
            challenge = resp.get(name)
            assert challenge is not None
            hdrs = dict(headers or {})
            hdrs[auth_name] = digest_header(
                challenge, method, uri, self.auth_user or self.user, self.password
            )
            data, branch = self.build(method, uri, hdrs, body)
            resp = await self._transact(data, branch, timeout)
        return resp

    async def _transact(self, data: bytes, branch: str, timeout: float) -> Message:
        q: asyncio.Queue[Message] = asyncio.Queue()
        self._pending[branch] = q
        try:
            self._send(data)
            async with asyncio.timeout(timeout):
                while True:
                    resp = await q.get()
                    if resp.status >= 200:
                        return resp
        finally:
            del self._pending[branch]

    def contact(self, params: str = "", header_params: str = "") -> str:
        host, port = self.local
        return f"<sip:{self.user}@{host}:{port};transport={self.transport}{params}>{header_params}"

    async def register(
        self, params: str = "", header_params: str = "", expires: int = 600, **kw: str
    ) -> Message:
        headers = {"Contact": self.contact(params, header_params), "Expires": str(expires)}
        headers.update(kw)
        return await self.request("REGISTER", f"sip:{self.domain}", headers)


def next_id() -> int:
    return next(_counter)


# ---------------------------------------------------------------- call helpers
def respond(agent: Agent, req: Message, status: int, body: bytes = b"", tag: str = "") -> None:
    """Answer a request the server sent us (UAS side of a test phone)."""
    from sipwake.sip.message import make_response

    resp = make_response(req, status, to_tag=tag or None)
    if 100 < status < 300 and req.method == "INVITE":
        host, port = agent.local
        resp.add("Contact", f"<sip:{agent.user}@{host}:{port};transport={agent.transport}>")
    if body:
        resp.add("Content-Type", "application/sdp")
        resp.body = body
    agent.send_raw(resp.to_bytes())


async def next_request(agent: Agent, method: str, timeout: float = 5.0) -> Message:
    """The next request of that method sent to this phone (others are answered 200)."""
    async with asyncio.timeout(timeout):
        while True:
            req = await agent.requests.get()
            if req.method == method:
                return req
            if req.method not in ("ACK",):
                respond(agent, req, 200)


class Dialer:
    """The UAC side of a call from a test phone: INVITE, wait, ACK, BYE."""

    def __init__(self, agent: Agent, target: str, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.agent = agent
        self.target = target
        self.body = body
        self.headers = headers or {}
        self.responses: asyncio.Queue[Message] = asyncio.Queue()

    def start(self) -> None:
        a = self.agent
        host, port = a.local
        headers = {"Contact": f"<sip:{a.user}@{host}:{port};transport={a.transport}>", **self.headers}
        if self.body:
            headers["Content-Type"] = "application/sdp"
        self.data, self.branch = a.build("INVITE", self.target, headers, self.body)
        self.cseq = a.cseq
        a._pending[self.branch] = self.responses
        a.send_raw(self.data)

    async def start_authenticated(self, timeout: float = 10.0) -> None:
        """INVITE; when challenged (407), ACK the challenge and INVITE again with
        Proxy-Authorization, as a phone does."""
        self.start()
        async with asyncio.timeout(timeout):
            first = await self.responses.get()
            while first.status == 100:
                first = await self.responses.get()
        if first.status != 407:
            rest = [first]
            while not self.responses.empty():
                rest.append(self.responses.get_nowait())
            for resp in rest:  # not challenged: leave the answers for final()/provisional()
                self.responses.put_nowait(resp)
            return
        a = self.agent
        via = self.data.split(b"\r\n")[1].decode()  # our own top Via: the ACK's branch
        a.send_raw((
            f"ACK {self.target} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n"
            f"From: {first.get('From')}\r\nTo: {first.get('To')}\r\n"
            f"Call-ID: {first.call_id}\r\nCSeq: {self.cseq} ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode())  # fmt: skip
        challenge = first.get("Proxy-Authenticate")
        assert challenge is not None
        del a._pending[self.branch]
        self.headers = {
            **self.headers,
            "Proxy-Authorization": digest_header(
                challenge, "INVITE", self.target, a.auth_user or a.user, a.password
            ),
        }
        self.start()

    async def final(self, timeout: float = 10.0) -> Message:
        async with asyncio.timeout(timeout):
            while True:
                resp = await self.responses.get()
                if resp.status >= 200 and resp.cseq[1] == "INVITE":
                    return resp

    async def provisional(self, status: int = 180, timeout: float = 10.0) -> Message:
        async with asyncio.timeout(timeout):
            while True:
                resp = await self.responses.get()
                if resp.status == status:
                    return resp
                assert resp.status < 200, f"got {resp.status} waiting for {status}"

    def cancel(self) -> None:
        a = self.agent
        lines = self.data.split(b"\r\n\r\n")[0].decode().split("\r\n")
        out = [f"CANCEL {self.target} SIP/2.0"]
        for line in lines[1:]:
            name = line.split(":", 1)[0].lower()
            if name in ("via", "from", "to", "call-id", "max-forwards"):
                out.append(line)
        out.append(f"CSeq: {self.cseq} CANCEL")
        out.append("Content-Length: 0")
        a.send_raw(("\r\n".join(out) + "\r\n\r\n").encode())

    def ack(self, resp: Message) -> None:
        a = self.agent
        host, port = a.local
        lines = [
            f"ACK {resp.contacts[0].uri if resp.contacts else self.target} SIP/2.0",
            f"Via: SIP/2.0/{a.transport.upper()} {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: {resp.get('From')}",
            f"To: {resp.get('To')}",
            f"Call-ID: {resp.call_id}",
            f"CSeq: {self.cseq} ACK",
        ]
        lines += [f"Route: {r}" for r in reversed(resp.get_all("Record-Route"))]
        lines.append("Content-Length: 0")
        a.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def in_dialog(self, method: str, resp: Message, body: bytes = b"") -> Message:
        """BYE / re-INVITE / INFO inside the dialog that `resp` (our 200) made."""
        a = self.agent
        a.cseq += 1
        host, port = a.local
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        lines = [
            f"{method} {resp.contacts[0].uri if resp.contacts else self.target} SIP/2.0",
            f"Via: SIP/2.0/{a.transport.upper()} {host}:{port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: {resp.get('From')}",
            f"To: {resp.get('To')}",
            f"Call-ID: {resp.call_id}",
            f"CSeq: {a.cseq} {method}",
            f"Contact: <sip:{a.user}@{host}:{port};transport={a.transport}>",
        ]
        lines += [f"Route: {r}" for r in reversed(resp.get_all("Record-Route"))]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return await a._transact(("\r\n".join(lines) + "\r\n\r\n").encode() + body, branch, 10)


def answers(agent: Agent, branch: str) -> list[bytes]:
    """Every response that came back for `branch`, raw: it may echo what our parser (the
    agent's too) refuses, such as a NUL in the Call-ID."""
    tag = re.compile(rb"branch=" + re.escape(branch.encode()) + rb"(?![^;,\s])")
    return [data for data in agent.wire if data.startswith(b"SIP/") and tag.search(data)]


async def alive(agent: Agent) -> None:
    """The server (and for TCP this connection) still answers a good request."""
    assert (await agent.request("OPTIONS", f"sip:{agent.domain}")).status == 200
