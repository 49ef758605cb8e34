"""SIP over WebSocket (RFC 7118): the `ws:` and `wss:` listeners.

Browser and WebRTC dialers reach us this way. The HTTP upgrade must offer the `sip`
subprotocol; after it every WebSocket message carries exactly one SIP message, so
framing is the WebSocket's, not Content-Length's. Like a TCP connection, each
WebSocket is an RFC 5626 flow: the phone's Via and Contact name an unreachable
`.invalid` host, and requests to it go back over the connection it registered on.
We never open a WebSocket ourselves (RFC 7118 §5: the server side does not).

The WebSocket protocol itself (handshake, masking, fragments, ping/close) is
wsproto's: a sans-I/O state machine, fed from and drained to an asyncio transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Protocol, cast

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from sipwake.sip.guard import ConnectionGuard, SourceLimiter
from sipwake.sip.peer import Peer


class Host(Protocol):
    """The transport layer, as a WebSocket connection uses it."""

    max_size: int
    guard: ConnectionGuard
    sources: SourceLimiter
    upgrading: set[WsConnection]  # not yet flows: shutdown closes them too

    def add_flow(self, conn: WsConnection) -> None: ...

    def remove_flow(self, conn: WsConnection) -> None: ...

    def deliver(self, data: bytes, peer: Peer, stream: bool) -> None: ...

log = logging.getLogger("sipwake.sip.websocket")

SUBPROTOCOL = "sip"
HANDSHAKE_TIMEOUT = 10.0  # seconds a connection may take to finish the HTTP upgrade
MAX_FRAGMENTS = 256  # frames per SIP message: each costs CPU even when empty
_ids = itertools.count(1)

# RFC 6455 close codes
_NORMAL, _POLICY, _TOO_BIG = 1000, 1008, 1009


class WsConnection(asyncio.Protocol):
    """One WebSocket carrying SIP, from the HTTP upgrade to the close."""

    def __init__(self, layer: Host, kind: str) -> None:
        self.layer = layer
        self.kind = kind  # "ws" or "wss"
        self.flow = f"{kind}-{next(_ids)}"
        self.ws = WSConnection(ConnectionType.SERVER)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer_host = ""
        self.peer_port = 0
        self.open = False  # upgraded and not closing: a flow the layer may send on
        self.message = bytearray()  # the SIP message being received, fragment by fragment
        self.fragments = 0
        self.deadline: asyncio.TimerHandle | None = None
        self.last_active = 0.0  # for the guard: idle and half-message limits
        self.partial_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.peer_host, self.peer_port = transport.get_extra_info("peername")[:2]
        if not self.layer.guard.opened(self):
            self.transport.abort()  # over a connection cap
            return
        # tracked from the start: shutdown closes it, and it may not idle before upgrading
        self.layer.upgrading.add(self)
        self.deadline = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, self._too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self.layer.guard.closed(self)
        self._leave()

    def abort(self) -> None:
        self._leave()
        self.transport.abort()

    def send(self, data: bytes) -> None:
        """One SIP message as one WebSocket message: text when it is UTF-8 (RFC 7118 §5.1)."""
        if not self.open or self.ws.state is not ConnectionState.OPEN:
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self._write(self.ws.send(BytesMessage(data=data)))
        else:
            self._write(self.ws.send(TextMessage(data=text)))

    def close(self) -> None:
        if self.ws.state is ConnectionState.OPEN:
            self._close(_NORMAL, "server shutting down")
        else:
            self._leave()
            self.transport.close()

    # ---------------------------------------------------------------- receiving
    def data_received(self, data: bytes) -> None:
        self._receive(data)
        self.layer.guard.received(self, pending=bool(self.message))

    def _receive(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, Request):
                    self._handshake(event)
                elif isinstance(event, (TextMessage, BytesMessage)):
                    self._fragment(event)
                elif isinstance(event, Ping):
                    self._write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self._leave()  # no more SIP goes out on it, from now on
                    with _ignore_local_errors():
                        self._write(self.ws.send(event.response()))
                    self.transport.close()
                    return
                if self.transport.is_closing():
                    return
        except RemoteProtocolError as exc:
            log.warning("bad WebSocket data from %s:%d: %s", self.peer_host, self.peer_port, exc)
            self._leave()
            if exc.event_hint is not None:  # still in the handshake: an HTTP answer
                with _ignore_local_errors():
                    self._write(self.ws.send(exc.event_hint))
            self.transport.close()
        except Exception as exc:  # hostile bytes wsproto did not expect (non-ASCII headers)
            log.warning("bad WebSocket input from %s:%d: %r", self.peer_host, self.peer_port, exc)
            self._leave()
            if self.ws.state is ConnectionState.CONNECTING:
                with _ignore_local_errors():
                    self._write(self.ws.send(RejectConnection(status_code=400)))
            self.transport.close()

    def _handshake(self, request: Request) -> None:
        if SUBPROTOCOL not in request.subprotocols:
            # RFC 7118 §4.1: without "sip" on offer this is not a SIP WebSocket
            log.warning("WebSocket from %s:%d without the sip subprotocol refused",
                        self.peer_host, self.peer_port)  # fmt: skip
            self._write(self.ws.send(RejectConnection(status_code=400)))
            self.transport.close()
            return
        self._write(self.ws.send(AcceptConnection(subprotocol=SUBPROTOCOL)))
        self._stop_waiting()
        self.open = True
        self.layer.add_flow(self)

    def _too_slow(self) -> None:
        self.deadline = None
        if not self.open:
            log.info("WebSocket from %s:%d not upgraded in %.0f s: closed",
                     self.peer_host, self.peer_port, HANDSHAKE_TIMEOUT)  # fmt: skip
            self.transport.abort()

    def _stop_waiting(self) -> None:
        self.layer.upgrading.discard(self)
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _leave(self) -> None:
        """Not a flow any more: nothing is routed to it while it closes."""
        self._stop_waiting()
        if self.open:
            self.open = False
            self.layer.remove_flow(self)

    def _fragment(self, event: TextMessage | BytesMessage) -> None:
        data = event.data.encode() if isinstance(event, TextMessage) else event.data
        self.message += data
        self.fragments += 1
        if len(self.message) > self.layer.max_size:
            # 1009: the peer learns why; nothing of it was buffered beyond the limit
            log.warning("oversize WebSocket message (over %d bytes) from %s:%d; closing",
                        self.layer.max_size, self.peer_host, self.peer_port)  # fmt: skip
            self._close(_TOO_BIG, f"SIP message over {self.layer.max_size} bytes")
            return
        if self.fragments > MAX_FRAGMENTS:
            log.warning("SIP message in over %d WebSocket frames from %s:%d; closing",
                        MAX_FRAGMENTS, self.peer_host, self.peer_port)  # fmt: skip
            self._close(_POLICY, f"SIP message in over {MAX_FRAGMENTS} frames")
            return
        if not event.message_finished:
            return
        message = bytes(self.message)
        self.message.clear()
        self.fragments = 0
        if not message.strip():
            if message == b"\r\n\r\n":
                self.send(b"\r\n")  # RFC 5626-style ping, as SIP.js sends: pong
            return
        if not self.layer.sources.allow(self.peer_host):
            return  # a flood: dropped before any parsing
        peer = Peer(self.kind, self.peer_host, self.peer_port, self.flow)
        self.layer.deliver(message, peer, stream=False)

    # ------------------------------------------------------------------ writing
    def _close(self, code: int, reason: str) -> None:
        self._leave()
        with _ignore_local_errors():
            self._write(self.ws.send(CloseConnection(code=code, reason=reason)))
        self.transport.close()

    def _write(self, data: bytes) -> None:
        if data and not self.transport.is_closing():
            self.transport.write(data)


def _ignore_local_errors() -> contextlib.suppress:
    """wsproto refuses to send in a state that no longer allows it (already closing)."""
    return contextlib.suppress(LocalProtocolError)
