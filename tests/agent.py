"""A small SIP user agent for tests: sends requests over UDP or TCP, awaits responses,
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


@dataclass
class Agent:
    """One SIP endpoint (a phone). `requests` collects requests sent to it."""

    user: str
    password: str
    domain: str
    server: tuple[str, int]
    transport: str = "udp"
    auth_user: str = ""  # digest username when it differs from the AOR's user
    requests: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> Agent:
        loop = asyncio.get_running_loop()
        self._pending: dict[str, asyncio.Queue[Message]] = {}
        if self.transport == "udp":
            t, _ = await loop.create_datagram_endpoint(
                lambda: _UdpClient(self), local_addr=("127.0.0.1", 0)
            )
            self._send = lambda data: t.sendto(data, self.server)
        else:
            ctx = None
            if self.transport == "tls":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE  # the test server's cert is self-signed
            t, _ = await loop.create_connection(
                lambda: _TcpClient(self), *self.server, ssl=ctx
            )
            self._send = t.write
        self._t = t
        self.local = t.get_extra_info("sockname")[:2]
        self.call_id = f"{secrets.token_hex(6)}@test"
        self.cseq = 0
        self.tag = secrets.token_hex(4)
        return self

    def close(self) -> None:
        self._t.close()

    def _incoming(self, data: bytes) -> None:
        try:
            msg = parse(data, stream=self.transport != "udp")
        except SipParseError:
            return  # e.g. a 400 that echoes the malformed header we sent
        if msg.method:
            self.requests.put_nowait(msg)
            return
        q = self._pending.get(msg.top_via.branch)
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
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/{proto} {host}:{port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{self.domain}>;tag={self.tag}",
            f"To: <sip:{self.user}@{self.domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
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
