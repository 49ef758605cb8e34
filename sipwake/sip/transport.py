"""SIP transports: UDP, TCP, TLS and WebSocket listeners, connection reuse, response routing.

Incoming bytes become parsed Messages with `source` set to the Peer they came from
(for TCP/TLS/WS including the connection id: the RFC 5626 flow). WebSocket framing
lives in websocket.py. Requests get
`received`/`rport` added to their top Via (RFC 3581). A malformed request gets a 400
(505 in another SIP version) when it has a Via to answer to, and a log line; a
malformed response only the log line; oversize input is refused without being buffered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from sipwake.ids import random_hex
from sipwake.sip.errors import SipParseError
from sipwake.sip.guard import ConnectionGuard, Limits, SourceLimiter
from sipwake.sip.message import Message, make_response, parse, parse_error_partial
from sipwake.sip.peer import Peer
from sipwake.sip.websocket import WsConnection

log = logging.getLogger("sipwake.sip.transport")

MessageHandler = Callable[[Message], None]
DEFAULT_LIMITS = Limits()
_STREAMS = ("tcp", "tls", "ws", "wss")
_flow_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Listener:
    transport: str
    host: str
    port: int  # the bound port (resolved when 0 was asked for)


def _peer_host(addr: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    return addr[0], addr[1]


class TransportLayer:
    """Owns every socket; hands parsed messages to `handler` and sends what it is given."""

    def __init__(
        self,
        handler: MessageHandler,
        max_size: int = 65536,
        limits: Limits = DEFAULT_LIMITS,
        exempt: Callable[[str], bool] = lambda host: False,
    ) -> None:
        self.handler = handler
        self.max_size = max_size
        self.sources = SourceLimiter(limits.source_rate, limits.source_burst, exempt)
        self.guard = ConnectionGuard(limits)  # server.py hands it the registrar's flows
        self._sweeper: asyncio.TimerHandle | None = None
        self._connecting: set[asyncio.Task[None]] = set()  # connections we are opening
        self.listeners: list[Listener] = []
        self._udp: dict[str, asyncio.DatagramTransport] = {}  # "ipv4"/"ipv6" → socket
        # datagrams to send once this loop turn's callbacks have run (see send_bytes)
        self._outbox: list[tuple[asyncio.DatagramTransport, bytes, tuple[str, int]]] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._flows: dict[str, Flow] = {}
        self._by_addr: dict[tuple[str, str, int], Flow] = {}
        self.upgrading: set[WsConnection] = set()  # WebSockets not yet flows
        self._client_ssl: ssl.SSLContext | None = None
        self.on_flow_closed: Callable[[str], None] | None = None
        self.parse_errors = 0
        self.advertise = ""  # [sip] advertise: the host others reach us at, if not bound
        # [log] sip_trace: told of every message in and out (sip/trace.py); None: off
        self.trace: Callable[[str, bytes, Peer], None] | None = None

    def address(self, transport: str) -> tuple[str, int]:
        """Where others reach us over `transport`: for our Via, Record-Route, Contact."""
        listener = next((s for s in self.listeners if s.transport == transport), None)
        listener = listener or self.listeners[0]
        return self.advertise or listener.host, listener.port

    def is_us(self, host: str, port: int | None, secure: bool = False) -> bool:
        """Whether host:port names this server: a listener's address, or the advertised
        host on a listener's port (Route headers, Request-URIs with our IP). Without a
        port, 5060, or 5061 for sips:/TLS (RFC 3261 §19.1.2)."""
        host = canonical_host(host)
        port = port or (5061 if secure else 5060)
        return any(
            s.port == port and (host == s.host or host == self.advertise) for s in self.listeners
        )

    # ---------------------------------------------------------------- listening
    async def listen(
        self,
        transport: str,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> Listener:
        """`reuse_port`: one of several worker processes on the same address (the
        kernel spreads the sources over them, each source always to the same one)."""
        loop = asyncio.get_running_loop()
        bind_host = host.strip("[]")
        if transport == "udp":
            dgram, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(bind_host, port), reuse_port=reuse_port
            )
            _grow_buffers(dgram.get_extra_info("socket"))
            port = int(dgram.get_extra_info("sockname")[1])
            family = "ipv6" if ":" in bind_host else "ipv4"
            self._udp.setdefault(family, dgram)
            self._udp.setdefault("any", dgram)
        elif transport in _STREAMS:
            secure = transport in ("tls", "wss")
            if secure and ssl_context is None:
                raise ValueError(f"{transport} listener needs a certificate ([sip] tls_cert)")
            protocol = WsConnection if transport in ("ws", "wss") else _StreamConnection
            server = await loop.create_server(
                lambda: protocol(self, transport),
                bind_host,
                port,
                ssl=ssl_context if secure else None,
                reuse_address=True,
                reuse_port=reuse_port,
            )
            self._servers.append(server)
            # uvloop's Server.sockets is a list, typeshed says tuple: compiled code checks
            port = int(cast(Any, server).sockets[0].getsockname()[1])
        else:
            raise ValueError(f"unsupported SIP transport {transport!r}")
        listener = Listener(transport, canonical_host(bind_host), port)
        self.listeners.append(listener)
        log.info("SIP listening on %s:%s:%d", transport, bind_host, port)
        return listener

    def set_client_ssl(self, context: ssl.SSLContext) -> None:
        """TLS context for connections we open ourselves (tls: peers without a flow)."""
        self._client_ssl = context

    def start_sweeping(self) -> None:
        """Every few seconds, close streams that idle or hang on a half message."""
        limits = self.guard.limits
        every = max(0.05, min(5.0, limits.message_timeout / 3, limits.idle_timeout / 3))

        def sweep() -> None:
            self.guard.sweep()
            self._sweeper = asyncio.get_running_loop().call_later(every, sweep)

        self._sweeper = asyncio.get_running_loop().call_later(every, sweep)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in self._connecting:
            task.cancel()
        for server in self._servers:
            server.close()
        for conn in [*self._flows.values(), *self.upgrading]:
            conn.close()
        self._send_datagrams()
        for dgram in set(self._udp.values()):
            dgram.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._udp.clear()

    def flow_alive(self, flow: str) -> bool:
        return flow in self._flows

    def connections(self) -> dict[str, int]:
        """Open stream connections by transport (tcp, tls, ws, wss), WebSockets still
        in their handshake included: for the metrics, read per scrape."""
        counts = dict.fromkeys(_STREAMS, 0)
        for conn in self._flows.values():
            counts[conn.kind] = counts.get(conn.kind, 0) + 1
        for ws in self.upgrading:
            counts[ws.kind] = counts.get(ws.kind, 0) + 1
        return counts

    # ---------------------------------------------------------------- receiving
    def deliver(self, data: bytes, peer: Peer, stream: bool) -> None:
        """Bytes of one message from `peer`: parsed and handed on, or answered 400."""
        if self.trace is not None:
            self.trace("in", data, peer)
        try:
            msg = parse(data, stream=stream)
        except SipParseError as exc:
            self.parse_errors += 1
            log.warning("malformed SIP from %s: %s", peer, exc.args[0])
            self._answer_bad(exc, peer)
            return
        except Exception:  # a parser bug: log it, and keep the socket or connection
            self.parse_errors += 1
            log.exception("parser failed on %d bytes from %s", len(data), peer)
            return
        msg.source = peer
        msg.received_at = time.perf_counter()
        if msg.method:
            _stamp_via(msg, peer)
        try:
            self.handler(msg)
        except SipParseError as exc:  # a lazily parsed header turned out bad
            self.parse_errors += 1
            log.warning("malformed SIP from %s: %s", peer, exc.args[0])
            if msg.method and msg.method != "ACK":
                self._send_bad(msg, exc.args[0], peer)
        except Exception:
            log.exception("error handling %r from %s", msg, peer)
            if msg.method and msg.method != "ACK":
                resp = make_response(msg, 500)
                self.send(resp, peer)

    def _answer_bad(self, exc: SipParseError, peer: Peer, status: int = 0) -> None:
        """400 (or the error's own status: 505) to a malformed request, when it is one and
        a Via was readable; never to an ACK or a response."""
        partial = parse_error_partial(exc)
        if partial is None or not partial.method or partial.method == "ACK":
            return
        self._send_bad(partial, exc.args[0], peer, status or exc.status)

    def _send_bad(self, msg: Message, why: str, peer: Peer, status: int = 400) -> None:
        """Answer a request we could not take, statelessly, back where it came from: the
        Vias are copied as they came, even ones that don't parse (RFC 4475 badvers)."""
        if msg.get("via") is None:
            return  # nobody could match a response without one
        try:
            tag = None if msg.to_tag else random_hex(6)  # §8.2.6.2: a UAS adds a To tag
        except SipParseError:
            tag = None  # an unreadable To goes back as it came
        resp = make_response(msg, status, to_tag=tag)
        # the detail helps the sender's developer; keep it short, printable, single-line
        detail = "".join(c if c.isprintable() else " " for c in why[:80])
        resp.reason = f"{resp.reason} ({detail})"
        msg.source = peer
        self.send(resp, peer)

    def _refuse_oversize(self, head: bytes, peer: Peer) -> None:
        """Answer 413 to an oversize request from its headers alone."""
        try:
            msg = parse(head + b"\r\n\r\n")
        except SipParseError as exc:
            self._answer_bad(exc, peer, 413)
            return
        if msg.method and msg.method != "ACK":
            self._send_bad(msg, f"message over {self.max_size} bytes", peer, 413)

    # ------------------------------------------------------------------ sending
    def send(self, msg: Message, peer: Peer) -> bool:
        """Send a message. Responses follow RFC 3261 §18.2.2 from the request's source."""
        data = msg.to_bytes()
        if not msg.method and peer.transport == "udp":
            peer = _udp_response_target(msg, peer)
        return self.send_bytes(data, peer)

    def send_bytes(self, data: bytes, peer: Peer) -> bool:
        if self.trace is not None:
            self.trace("out", data, peer)
        if peer.transport == "udp":
            dgram = self._udp.get("ipv6" if ":" in peer.host else "ipv4") or self._udp.get("any")
            if dgram is None:
                log.warning("no UDP socket to send to %s", peer)
                return False
            if not _is_ip(peer.host):  # as the socket would refuse it: the sender's error
                raise ValueError(f"not an IP address to send a datagram to: {peer.host!r}")
            if not self._outbox:
                asyncio.get_running_loop().call_soon(self._send_datagrams)
            self._outbox.append((dgram, data, (peer.host, peer.port)))
            return True
        if peer.flow:
            # that connection or none: another one from the same address (a new client
            # behind the same proxy or NAT port) must not get this phone's traffic
            conn = self._flows.get(peer.flow)
        else:
            conn = self._by_addr.get((peer.transport, peer.host, peer.port))
        if conn is not None:
            conn.send(data)
            return True
        if peer.transport in ("ws", "wss"):
            log.info("no WebSocket open to %s: not sent (we never open one)", peer)
            return False
        # no open connection: open one in the background (RFC 3261 §18.2.2 fallback);
        # kept until done (a task nobody holds may be collected mid-flight)
        task = asyncio.get_running_loop().create_task(self._connect_and_send(data, peer))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return True

    def _send_datagrams(self) -> None:
        """Send the datagrams queued in this loop turn, back to back. A peer woken by the
        first finds the rest waiting: one wake-up per turn instead of one per datagram
        (on a VM an idle CPU's wake-up is an IPI, costing the sender microseconds)."""
        out, self._outbox = self._outbox, []
        for dgram, data, addr in out:
            try:
                dgram.sendto(data, addr)
            except (OSError, ValueError) as exc:  # e.g. an IPv6 peer and only IPv4 bound
                log.warning("datagram to %s not sent: %s", addr, exc)

    async def _connect_and_send(self, data: bytes, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _StreamConnection(self, peer.transport),
                    peer.host,
                    peer.port,
                    ssl=self._client_context() if peer.transport == "tls" else None,
                ),
                timeout=5,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.info("cannot connect to %s: %s", peer, exc)
            return
        conn.transport.write(data)

    def _client_context(self) -> ssl.SSLContext:
        if self._client_ssl is None:
            self._client_ssl = ssl.create_default_context()
        return self._client_ssl

    # ---------------------------------------------------------- connection table
    def add_flow(self, conn: Flow) -> None:
        self._flows[conn.flow] = conn
        self._by_addr[(conn.kind, conn.peer_host, conn.peer_port)] = conn

    def remove_flow(self, conn: Flow) -> None:
        self._flows.pop(conn.flow, None)
        key = (conn.kind, conn.peer_host, conn.peer_port)
        if self._by_addr.get(key) is conn:
            del self._by_addr[key]
        if self.on_flow_closed is not None:
            self.on_flow_closed(conn.flow)


def _stamp_via(msg: Message, peer: Peer) -> None:
    """RFC 3581 rport and RFC 3261 §18.2.1 received on the top Via."""
    via = msg.top_via
    changed = False
    if "rport" in via.params:
        via.params["rport"] = str(peer.port)
        changed = True
    if via.host.strip("[]") != peer.host or changed:
        via.params["received"] = peer.host
        changed = True
    if changed:
        vias = msg.vias
        msg.replace_top("via", str(via))
        msg._cache["via"] = vias  # still valid: `via` was updated in place


def _udp_response_target(resp: Message, peer: Peer) -> Peer:
    """Responses over UDP go to received:rport, else received:sent-by port (§18.2.2)."""
    try:
        via = resp.top_via
    except SipParseError:
        return peer
    rport = via.params.get("rport")
    received = via.params.get("received") or via.host
    if rport and rport.isdigit() and rport.isascii():
        return Peer("udp", received.strip("[]"), int(rport))
    if via.params.get("received"):
        return Peer("udp", received.strip("[]"), via.port or 5060)
    return peer


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self.layer = layer

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(data) <= 4 and not data.strip():
            return  # CRLF keep-alive
        host, port = str(addr[0]), int(addr[1])
        if not self.layer.sources.allow(host):
            return  # one address flooding: dropped before any parsing
        peer = Peer("udp", host, port)
        if len(data) > self.layer.max_size:
            log.warning("oversize datagram (%d bytes) from %s dropped", len(data), peer)
            head = data.split(b"\r\n\r\n", 1)[0]
            self.layer._refuse_oversize(head, peer)
            return
        self.layer.deliver(data, peer, stream=False)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class _StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection: frames messages by Content-Length (RFC 3261 §18.3)."""

    def __init__(self, layer: TransportLayer, kind: str) -> None:
        self.layer = layer
        self.kind = kind
        self.flow = f"{kind}-{next(_flow_ids)}"
        self.buffer = bytearray()
        self.skip = 0  # body bytes of a refused oversize message still to discard
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer_host = ""
        self.peer_port = 0
        self.last_active = 0.0  # for the guard: idle and half-message limits
        self.partial_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.peer_host, self.peer_port = _peer_host(transport.get_extra_info("peername"))
        if not self.layer.guard.opened(self):
            self.transport.abort()  # over a connection cap: no flow, nothing read
            return
        self.layer.add_flow(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.layer.guard.closed(self)
        self.layer.remove_flow(self)

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.skip:
            dropped = min(self.skip, len(data))
            self.skip -= dropped
            data = data[dropped:]
        self.buffer += data
        while self.buffer:
            if not self._next_message():
                break
        self.layer.guard.received(self, pending=bool(self.buffer) or self.skip > 0)

    def _next_message(self) -> bool:
        """Take one message off the buffer; False when more bytes are needed."""
        buf = self.buffer
        # RFC 5626 keep-alive: a double CRLF ping gets a single CRLF pong
        while buf.startswith(b"\r\n"):
            if buf.startswith(b"\r\n\r\n"):
                del buf[:4]
                self.transport.write(b"\r\n")
            elif len(buf) < 4:
                return False  # maybe the start of a ping: wait for the rest
            else:
                del buf[:2]
        if not buf:
            return False
        peer = Peer(self.kind, self.peer_host, self.peer_port, self.flow)
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.layer.max_size:
                log.warning("oversize header block from %s; closing", peer)
                self.layer._refuse_oversize(bytes(buf[:4096]), peer)
                self.transport.close()
                buf.clear()
            return False
        head = bytes(buf[:end])
        length = _content_length(head)
        if length is None:
            log.warning("no valid Content-Length on stream from %s; closing", peer)
            self.layer.deliver(head + b"\r\n\r\n", peer, stream=True)  # gets its 400
            self.transport.close()
            buf.clear()
            return False
        total = end + 4 + length
        if total > self.layer.max_size:
            log.warning("oversize message (%d bytes) from %s refused", total, peer)
            self.layer._refuse_oversize(head, peer)
            available = len(buf) - (end + 4)
            self.skip = max(0, length - available)
            del buf[: min(total, len(buf))]
            return True
        if len(buf) < total:
            return False
        data = bytes(buf[:total])
        del buf[:total]
        if self.layer.sources.allow(self.peer_host):  # else dropped: a flood
            self.layer.deliver(data, peer, stream=True)
        return True


Flow = _StreamConnection | WsConnection  # a connection a request can go back over


def canonical_host(host: str) -> str:
    """One spelling per host, for comparing: "[::FFFF:127.0.0.1]" and "::ffff:7f00:1"
    are the same address; names are case-insensitive."""
    return _host(host)[0]


def _is_ip(host: str) -> bool:
    """An IP literal as written, no brackets: what a datagram socket takes."""
    return _host(host)[1]


def _host(host: str) -> tuple[str, bool]:
    known = _HOSTS.get(host)
    if known is not None:
        return known
    bare = host.strip("[]")
    try:
        known = (ipaddress.ip_address(bare).compressed, bare == host)
    except ValueError:
        known = (bare.lower(), False)
    # every Route and Request-URI asks, and every datagram sent, of the few hosts that
    # name us and our peers: ipaddress each time was ~4 % of a proxied call. Bounded:
    # hosts are the sender's.
    if len(host) <= 64:
        if len(_HOSTS) >= _HOSTS_MAX:
            _HOSTS.clear()
        _HOSTS[host] = known
    return known


_HOSTS: Final[dict[str, tuple[str, bool]]] = {}
_HOSTS_MAX: Final = 4096


# A header line named Content-Length or l, its value up to the line's end. At a line's start
# only: a continuation line (leading whitespace) belongs to the header before it, as the
# parser reads it.
_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:([^\r\n]*)", re.IGNORECASE)


def _content_length(head: bytes) -> int | None:
    """The body length a stream frames by: None when it is missing, malformed or given
    twice (RFC 4475 mcl01), as then no boundary on the stream can be trusted."""
    values = _CONTENT_LENGTH.findall(head)
    if len(values) != 1:
        return None
    value = values[0].strip()
    return int(value) if value.isdigit() and len(value) < 10 else None  # ASCII digits only


UDP_BUFFER = 4 * 1024 * 1024


def _grow_buffers(sock: socket.socket | None) -> None:
    """A burst of REGISTERs or INVITEs must queue in the kernel while the loop is busy,
    not be dropped and cost a 500 ms retransmission; the kernel caps it at rmem_max."""
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
        except OSError:
            pass
