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
from typing import TYPE_CHECKING

from wsproto import ConnectionType, WSConnection
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

from sipwake.sip.peer import Peer

if TYPE_CHECKING:
    from sipwake.sip.transport import TransportLayer

log = logging.getLogger("sipwake.sip.websocket")

SUBPROTOCOL = "sip"
_ids = itertools.count(1)

# RFC 6455 close codes
_NORMAL, _PROTOCOL_ERROR, _TOO_BIG = 1000, 1002, 1009


class WsConnection(asyncio.Protocol):
    """One WebSocket carrying SIP, from the HTTP upgrade to the close."""

    def __init__(self, layer: TransportLayer, kind: str) -> None:
        self.layer = layer
        self.kind = kind  # "ws" or "wss"
        self.flow = f"{kind}-{next(_ids)}"
        self.ws = WSConnection(ConnectionType.SERVER)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer_host = ""
        self.peer_port = 0
        self.open = False  # handshake done: a flow the layer may send on
        self.parts: list[bytes] = []  # fragments of the message being received
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer_host, self.peer_port = transport.get_extra_info("peername")[:2]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.open = False
            self.layer._unregister(self)

    def send(self, data: bytes) -> None:
        """One SIP message as one WebSocket message: text when it is UTF-8 (RFC 7118 §5.1)."""
        if not self.open:
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self._write(self.ws.send(BytesMessage(data=data)))
        else:
            self._write(self.ws.send(TextMessage(data=text)))

    def close(self) -> None:
        if self.open:
            self._close(_NORMAL, "server shutting down")
        else:
            self.transport.close()

    # ---------------------------------------------------------------- receiving
    def data_received(self, data: bytes) -> None:
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
                    self._write(self.ws.send(event.response()))
                    self.transport.close()
                    return
                if self.transport.is_closing():
                    return
        except RemoteProtocolError as exc:
            log.warning("bad WebSocket data from %s:%d: %s", self.peer_host, self.peer_port, exc)
            if exc.event_hint is not None:  # still in the handshake: an HTTP answer
                with _ignore_local_errors():
                    self._write(self.ws.send(exc.event_hint))
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
        self.open = True
        self.layer._register(self)

    def _fragment(self, event: TextMessage | BytesMessage) -> None:
        data = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
        self.size += len(data)
        if self.size > self.layer.max_size:
            # 1009: the peer learns why; nothing of it was buffered beyond the limit
            log.warning("oversize WebSocket message (over %d bytes) from %s:%d; closing",
                        self.layer.max_size, self.peer_host, self.peer_port)  # fmt: skip
            self._close(_TOO_BIG, f"SIP message over {self.layer.max_size} bytes")
            return
        self.parts.append(data)
        if not event.message_finished:
            return
        message = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        if not message.strip():
            return  # an empty keep-alive
        peer = Peer(self.kind, self.peer_host, self.peer_port, self.flow)
        self.layer._deliver(message, peer, stream=False)

    # ------------------------------------------------------------------ writing
    def _close(self, code: int, reason: str) -> None:
        with _ignore_local_errors():
            self._write(self.ws.send(CloseConnection(code=code, reason=reason)))
        self.transport.close()

    def _write(self, data: bytes) -> None:
        if data and not self.transport.is_closing():
            self.transport.write(data)


def _ignore_local_errors() -> contextlib.suppress:
    """wsproto refuses to send in a state that no longer allows it (already closing)."""
    return contextlib.suppress(LocalProtocolError)
