"""The far side of bench/calls.py: an APNs stand-in and the sleeping iPhones it wakes.

Runs as its own process, on uvloop when installed:

    python bench/call_farm.py APNS_KEY.p8 SIPWAKE_UDP_PORT DOMAIN

It prints {"apns_port": ..., "farm_port": ...}, then answers JSON lines on stdin with
one line each on stdout:

  {"cmd": "provision", "n": N}  register devices u0..u{N-1} with RFC 8599 push params,
                                then Expires: 0: each is now a sleeping iPhone
  {"cmd": "bind", "port": P, "prefix": "c", "n": N}
                                register users c0..c{N-1} from udp port P (a SIPp UAS
                                takes that port next), no push params
  {"cmd": "idle", "timeout": T} wait until every device sleeps again; counters
  {"cmd": "stats"}              counters
  {"cmd": "stop"}

The APNs stand-in is tests/helpers/apns_standin.py (strict: ES256 JWT, topic, push
type, payload) over h2c. Every push it accepts wakes the device owning the token in
its :path, which then:
  REGISTER (digest: the nonce of its first 401 is reused with a growing nc, so no
  challenge in the measured flow) → parked INVITE arrives → 180 + 200 (SDP answer)
  → ACK → BYE → 200 → REGISTER Expires: 0 (asleep again, its next call is parked).
One UDP socket serves every device; the user part of the Request-URI says which.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from tests.helpers.apns_standin import APNsStandIn  # noqa: E402

TEAM, KID, BUNDLE = "TEAM123456", "KEY7654321", "com.example.dialer"
PN_PARAM = f"{TEAM}.{BUNDLE}.voip"
ANSWER = (
    b"v=0\r\no=device 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 50000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
           "l": "content-length"}  # fmt: skip
RETRANSMIT = 1.0  # seconds before a REGISTER is resent (UDP); three tries
_DIRECTIVE = re.compile(r'(\w+)="?([^",]*)"?')


def token_of(i: int) -> str:
    return f"{i:08x}" + "ab" * 28  # 64 hex digits, as APNs tokens are


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


# ------------------------------------------------------------------ SIP, minimal
@dataclass(slots=True)
class Msg:
    start: str
    headers: list[tuple[str, str]]  # (lower-case name, value), in order
    body: bytes

    def get(self, name: str) -> str:
        for n, v in self.headers:
            if n == name:
                return v
        return ""

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


def parse(data: bytes) -> Msg:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        headers.append((COMPACT.get(name, name), value.strip()))
    return Msg(lines[0], headers, body)


def response(req: Msg, status: str, to_tag: str = "", extra: str = "", body: bytes = b"") -> bytes:
    """A response to `req`: Vias and Record-Routes copied in order (RFC 3261 §8.2.6, §12.1.1)."""
    lines = [f"SIP/2.0 {status}"]
    lines += [f"Via: {v}" for v in req.all("via")]
    lines += [f"Record-Route: {v}" for v in req.all("record-route")]
    to = req.get("to")
    if to_tag and ";tag=" not in to:
        to = f"{to};tag={to_tag}"
    lines += [f"From: {req.get('from')}", f"To: {to}", f"Call-ID: {req.get('call-id')}",
              f"CSeq: {req.get('cseq')}"]  # fmt: skip
    if extra:
        lines.append(extra)
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    return "\r\n".join(lines).encode() + body


def ruri_user(start: str) -> str:
    """'INVITE sip:u12@127.0.0.1:5070 SIP/2.0' → 'u12'."""
    uri = start.split(" ", 2)[1]
    return uri.partition(":")[2].partition("@")[0]


@dataclass(eq=False, slots=True)
class Account:
    """A SIP user registering from one address: digest state survives between REGISTERs."""

    user: str
    domain: str
    ha1: str
    contact: str  # Contact header value, without expires
    call_id: str
    cseq: int = 0
    nonce: str = ""
    opaque: str = ""
    nc: int = 0

    def register(self, local: str, expires: int) -> bytes:
        self.cseq += 1
        uri = f"sip:{self.domain}"
        lines = [
            f"REGISTER {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {local};branch=z9hG4bK{os.urandom(6).hex()};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{self.domain}>;tag={self.call_id}",
            f"To: <sip:{self.user}@{self.domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: {self.contact}",
            f"Expires: {expires}",
        ]
        if self.nonce:
            self.nc += 1
            nc = f"{self.nc:08x}"
            cnonce = os.urandom(4).hex()
            ha2 = md5(f"REGISTER:{uri}")
            resp = md5(f"{self.ha1}:{self.nonce}:{nc}:{cnonce}:auth:{ha2}")
            lines.append(
                f'Authorization: Digest username="{self.user}", realm="{self.domain}", '
                f'nonce="{self.nonce}", uri="{uri}", response="{resp}", algorithm=MD5, '
                f'cnonce="{cnonce}", qop=auth, nc={nc}, opaque="{self.opaque}"'
            )
        lines.append("Content-Length: 0\r\n\r\n")
        return "\r\n".join(lines).encode()

    def challenged(self, resp: Msg) -> bool:
        """Take the MD5 nonce of a 401; False when there is none."""
        for value in resp.all("www-authenticate"):
            d = dict(_DIRECTIVE.findall(value))
            if d.get("algorithm", "MD5").upper() == "MD5" and d.get("nonce"):
                self.nonce, self.opaque, self.nc = d["nonce"], d.get("opaque", ""), 0
                return True
        return False


@dataclass(eq=False, slots=True)
class _Pending:
    account: Account
    expires: int
    done: Callable[[int], None]
    data: bytes = b""
    tries: int = 0
    challenges: int = 0
    timer: asyncio.TimerHandle | None = None


class SipSocket(asyncio.DatagramProtocol):
    """REGISTER client for many accounts on one socket; other requests go to `on_request`."""

    def __init__(self, server: tuple[str, int], counts: Counter[str]) -> None:
        self.server = server
        self.counts = counts
        self.pending: dict[str, _Pending] = {}  # REGISTER Call-ID → in flight
        self.on_request: Callable[[Msg], None] = lambda msg: None
        self.transport: asyncio.DatagramTransport | None = None
        self.local = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        host, port = sock.getsockname()[:2]
        self.local = f"{host}:{port}"

    def send(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr or self.server)

    def register(self, account: Account, expires: int, done: Callable[[int], None]) -> None:
        """REGISTER; `done(status)` with the final status (408 after three lost tries).
        A REGISTER of the account still in flight is given up: the new one supersedes it."""
        old = self.pending.get(account.call_id)
        if old is not None:
            self.counts["register_superseded"] += 1
            self._finish(old, 0)
        p = _Pending(account, expires, done)
        self.pending[account.call_id] = p
        self._send_register(p)

    def settle(self, account: Account, status: int) -> None:
        """The account's REGISTER in flight is known to have had `status` (its response
        was lost, but what followed proves the server took it)."""
        p = self.pending.get(account.call_id)
        if p is not None:
            self.counts["register_settled"] += 1
            self._finish(p, status)

    def _finish(self, p: _Pending, status: int) -> None:
        if p.timer is not None:
            p.timer.cancel()
        if self.pending.get(p.account.call_id) is p:
            del self.pending[p.account.call_id]
        p.done(status)

    def _send_register(self, p: _Pending) -> None:
        p.data = p.account.register(self.local, p.expires)
        p.tries = 0
        self._transmit(p)

    def _transmit(self, p: _Pending) -> None:
        if p.tries >= 3:
            self._finish(p, 408)
            return
        p.tries += 1
        if p.tries > 1:
            self.counts["register_retransmits"] += 1
        self.send(p.data)
        p.timer = asyncio.get_running_loop().call_later(RETRANSMIT, self._transmit, p)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse(data)
        if not msg.start.startswith("SIP/2.0 "):
            self.on_request(msg)
            return
        p = self.pending.get(msg.get("call-id"))
        if p is None or msg.get("cseq") != f"{p.account.cseq} REGISTER":
            return  # a stray or late response
        status = int(msg.start[8:11])
        if status < 200:
            return
        if status == 401 and p.challenges < 2 and p.account.challenged(msg):
            if p.timer is not None:
                p.timer.cancel()
            p.challenges += 1
            self.counts["register_challenged"] += 1
            self._send_register(p)
            return
        self._finish(p, status)


# ----------------------------------------------------------------- the devices
@dataclass(eq=False, slots=True)
class Device:
    account: Account
    token: str
    state: str = "asleep"  # asleep → waking (push came) → in_call (INVITE came) → asleep
    call_id: str = ""  # the INVITE it answered
    to_tag: str = ""
    byes: set[str] = field(default_factory=set)


class Farm:
    def __init__(self, sip: SipSocket, domain: str) -> None:
        self.sip = sip
        self.domain = domain
        self.counts = sip.counts
        self.by_user: dict[str, Device] = {}
        self.by_token: dict[str, Device] = {}
        self.awake = 0  # devices not asleep
        self.idle_event = asyncio.Event()
        self.idle_event.set()
        sip.on_request = self.on_request

    def device(self, i: int) -> Device:
        user = f"u{i}"
        dev = self.by_user.get(user)
        if dev is None:
            token = token_of(i)
            instance = f"urn:uuid:00000000-0000-4000-8000-{i:012x}"
            contact = (f"<sip:{user}@{self.sip.local};pn-provider=apns;pn-prid={token};"
                       f'pn-param={PN_PARAM}>;+sip.instance="<{instance}>"')  # fmt: skip
            account = Account(user, self.domain, md5(f"{user}:{self.domain}:p{i}"), contact,
                              f"reg-{user}-{os.urandom(4).hex()}")  # fmt: skip
            dev = self.by_user[user] = self.by_token[token] = Device(account, token)
        return dev

    # a push: wake up and register
    def on_push(self, token: str, body: bytes) -> None:
        dev = self.by_token.get(token)
        self.counts["pushes"] += 1
        if dev is None or json.loads(body).get("type") != "call":
            self.counts["push_unknown"] += 1
            return
        if dev.state != "asleep":
            self.counts["push_while_awake"] += 1
            return
        self._set(dev, "waking")
        self.sip.register(dev.account, 3600, lambda status: self._woke(dev, status))

    def _woke(self, dev: Device, status: int) -> None:
        if status == 200:
            self.counts["wake_registers"] += 1
        elif status and dev.state == "waking":
            self.counts[f"wake_register_{status}"] += 1
            self._set(dev, "asleep")

    # requests sipwake forwards to the devices
    def on_request(self, req: Msg) -> None:
        method = req.start.split(" ", 1)[0]
        dev = self.by_user.get(ruri_user(req.start))
        if dev is None or method not in ("INVITE", "ACK", "BYE", "CANCEL"):
            self.counts[f"unexpected_{method}"] += 1
            if method != "ACK":
                self.sip.send(response(req, "481 Call/Transaction Does Not Exist", "x"))
            return
        call_id = req.get("call-id")
        if method == "INVITE":
            if dev.state == "waking":  # so its REGISTER went through, answered or not
                self.sip.settle(dev.account, 200)
            if dev.call_id != call_id:  # a new call (else an INVITE retransmission)
                self.counts["invites"] += 1
                dev.call_id, dev.to_tag = call_id, os.urandom(4).hex()
                self._set(dev, "in_call")
            contact = f"Contact: <sip:{dev.account.user}@{self.sip.local}>"
            self.sip.send(response(req, "180 Ringing", dev.to_tag, contact))
            sdp = contact + "\r\nContent-Type: application/sdp"
            self.sip.send(response(req, "200 OK", dev.to_tag, sdp, ANSWER))
        elif method == "ACK":
            self.counts["acks"] += 1
        elif method == "BYE":
            self.sip.send(response(req, "200 OK"))
            if call_id not in dev.byes:
                dev.byes = {call_id}
                self.counts["byes"] += 1
                self.sip.register(dev.account, 0, lambda status: self._slept(dev, status))
        else:  # CANCEL: the call ended before we answered (we answer at once: too late)
            self.counts["cancels"] += 1
            self.sip.send(response(req, "200 OK"))
            if call_id == dev.call_id and call_id not in dev.byes and dev.state == "in_call":
                dev.byes = {call_id}  # no BYE will come: back to sleep
                self.sip.register(dev.account, 0, lambda status: self._slept(dev, status))

    def _slept(self, dev: Device, status: int) -> None:
        self.counts["flows" if status == 200 else f"sleep_register_{status}"] += 1
        self._set(dev, "asleep")

    def _set(self, dev: Device, state: str) -> None:
        was_asleep, dev.state = dev.state == "asleep", state
        self.awake += was_asleep - (state == "asleep")
        if self.awake:
            self.idle_event.clear()
        else:
            self.idle_event.set()

    # setup
    async def provision(self, n: int) -> dict[str, Any]:
        """Each device registers its push token once, then goes to sleep (Expires: 0)."""
        started = time.perf_counter()
        results: Counter[int] = Counter()
        window = asyncio.Semaphore(200)

        async def one(i: int) -> None:
            async with window:
                dev = self.device(i)
                for expires in (3600, 0):
                    status = await register(self.sip, dev.account, expires)
                    results[status] += 1
                    if status != 200:
                        return

        await asyncio.gather(*(one(i) for i in range(n)))
        return {"statuses": dict(results), "seconds": time.perf_counter() - started}


async def register(sip: SipSocket, account: Account, expires: int) -> int:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    sip.register(account, expires, future.set_result)
    return await future


async def bind(server: tuple[str, int], domain: str, port: int, prefix: str,
               n: int) -> dict[str, Any]:  # fmt: skip
    """Bindings for users prefix0.. whose contact is udp 127.0.0.1:port (a SIPp UAS)."""
    loop = asyncio.get_running_loop()
    counts: Counter[str] = Counter()
    transport, sip = await loop.create_datagram_endpoint(
        lambda: SipSocket(server, counts), local_addr=("127.0.0.1", port)
    )
    started = time.perf_counter()
    results: Counter[int] = Counter()
    window = asyncio.Semaphore(200)

    async def one(i: int) -> None:
        user = f"{prefix}{i}"
        account = Account(user, domain, md5(f"{user}:{domain}:p{i}"),
                          f"<sip:{user}@127.0.0.1:{port}>", f"bind-{user}")  # fmt: skip
        async with window:
            results[await register(sip, account, 3600)] += 1

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        transport.close()
    return {"statuses": dict(results), "seconds": time.perf_counter() - started}


# ------------------------------------------------------------- APNs stand-in
class WakingAPNs(APNsStandIn):
    """The strict stand-in; every push it accepts goes to the farm's device."""

    def __init__(self, farm: Farm, **kw: Any) -> None:
        super().__init__(**kw)
        self.farm = farm

    def handle(self, conn_no: int, stream_id: int, headers: dict[str, str],
               body: bytes) -> tuple[int, str, Any]:  # fmt: skip
        status, reason, reply = super().handle(conn_no, stream_id, headers, body)
        if status == 200:
            token = headers.get(":path", "").rpartition("/")[2]
            # after this stream's 200 is written: the device wakes on the push's arrival
            asyncio.get_running_loop().call_soon(self.farm.on_push, token, body)
        return status, reason, reply


async def main(key_pem: bytes, sip_port: int, domain: str) -> None:
    loop = asyncio.get_running_loop()
    counts: Counter[str] = Counter()
    server = ("127.0.0.1", sip_port)
    _, sip = await loop.create_datagram_endpoint(
        lambda: SipSocket(server, counts), local_addr=("127.0.0.1", 0)
    )
    farm = Farm(sip, domain)
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    apns = WakingAPNs(farm, team_id=TEAM, key_id=KID, public_key=key.public_key(),
                      topics={BUNDLE}, record=False)  # fmt: skip
    await apns.start()

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def stats() -> dict[str, Any]:
        return {**counts, "awake": farm.awake, "apns_answered": apns.answered,
                "apns_violations": apns.violations[:5],
                "apns_connections": apns.connections}  # fmt: skip

    reply({"apns_port": apns.port, "farm_port": int(sip.local.rpartition(":")[2])})
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        what = cmd["cmd"]
        if what == "provision":
            reply(await farm.provision(cmd["n"]))
        elif what == "bind":
            reply(await bind(server, domain, cmd["port"], cmd["prefix"], cmd["n"]))
        elif what == "idle":
            try:
                await asyncio.wait_for(farm.idle_event.wait(), cmd["timeout"])
            except TimeoutError:
                pass
            reply(stats())
        elif what == "stats":
            reply(stats())
        else:
            reply({"stopped": True})
            break
    await apns.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    coro = main(Path(args[0]).read_bytes(), int(args[1]), args[2])
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)
