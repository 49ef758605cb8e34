"""The HTTP/2 server under the APNs and FCM stand-ins, with the faults a provider shows.

A subclass checks and answers requests (`answer`); this module owns the wire: h2
connections, SETTINGS_MAX_CONCURRENT_STREAMS (more open streams than advertised is a
violation), PINGs, GOAWAY, and the fault modes a test programs per request:

- `drop`: the connection is cut (TCP abort) once the request has arrived, unanswered;
- `stall`: the request is never answered (the stream stays open, the connection lives);
- `goaway`: a GOAWAY whose last-stream-id is below the request's (so it was refused
  unprocessed), and the connection closes once the earlier streams are answered;
- `reset`: RST_STREAM with that error code instead of an answer (7: REFUSED_STREAM);
- `delay`: the answer comes that many seconds late;
- a status (5xx, 429) with `retry_after`.

Every request that arrives whole is counted in `wire`, processed or not, so tests can
assert how many times each one went out; `answered` counts the answers sent.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame


@dataclass
class Fault:
    """What to do with one request instead of answering it at once."""

    drop: bool = False  # cut the connection (TCP abort) instead of answering
    stall: bool = False  # never answer
    goaway: bool = False  # refuse it unprocessed with a GOAWAY, then close
    reset: int | None = None  # RST_STREAM with this error code
    delay: float = 0.0  # answer this many seconds late

    @property
    def refuses(self) -> bool:
        """The request is not processed at all (not recorded as handled)."""
        return self.goaway or self.reset is not None


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    fault: Fault | None = None


@dataclass
class WireRequest:
    """A whole request as it arrived, before anything was checked."""

    connection: int
    stream_id: int
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # the stand-in's clock (a test's fake clock) when it arrived


class H2StandIn:
    """Owns listening, connections and faults; subclasses implement `fault_for` and
    `answer`."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_concurrent_streams: int = 1000,
        response_delay: float = 0.0,
        goaway_after: int | None = None,
        record: bool = True,
    ) -> None:
        self.ssl_context = ssl_context
        self.max_concurrent_streams = max_concurrent_streams
        self.response_delay = response_delay
        self.goaway_after = goaway_after
        self.record = record
        self.wire: list[WireRequest] = []
        self.answered = 0
        self.stalled = 0
        self.violations: list[str] = []
        self.connections = 0
        self.refused_connections = 0  # reset at once while `down`
        self.peak_streams = 0
        self.pings = 0
        self.ping_event = asyncio.Event()
        self.request_event = asyncio.Event()  # set when any request starts arriving
        self._conns: set[ServerConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self.port = 0
        self.clock: Callable[[], float] = time.time
        self.down = False  # refuse every new connection (the provider is unreachable)
        self.stall_all = False  # accept requests and never answer any (a hung provider)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> H2StandIn:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ServerConnection(self), "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns):
                conn.abort()
            await self._server.wait_closed()

    def goaway_all(self) -> None:
        for conn in list(self._conns):
            conn.goaway()

    def drop_all(self) -> None:
        """Cut every connection now (a provider's load balancer restarting)."""
        for conn in list(self._conns):
            conn.abort()

    # -- for subclasses ----------------------------------------------------------------

    def fault_for(self, headers: dict[str, str], body: bytes) -> Fault | None:
        """A fault programmed for this request, taken before it is processed."""
        return None

    def answer(self, conn_no: int, stream_id: int, headers: dict[str, str],
               body: bytes) -> Answer:
        """Check and answer one request (not called for refused or stalled ones)."""
        raise NotImplementedError


class ServerConnection(asyncio.Protocol):
    def __init__(self, server: H2StandIn) -> None:
        self.server = server
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.open = 0  # requests received and not answered yet
        self.served = 0
        self.goaway_last: int | None = None
        self.highest = 0
        self.number = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if self.server.down:
            self.server.refused_connections += 1
            self.transport.abort()
            return
        self.server.connections += 1
        self.number = self.server.connections
        self.server._conns.add(self)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 8000,
            },
        )
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._conns.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.server.violations.append(f"HTTP/2 protocol error: {exc!r}")
            self.flush()
            self.abort()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                sid = event.stream_id
                self.highest = max(self.highest, sid)
                self.open += 1
                self.server.peak_streams = max(self.server.peak_streams, self.open)
                self.server.request_event.set()
                if self.open > self.server.max_concurrent_streams:
                    self.server.violations.append(
                        f"{self.open} concurrent streams > {self.server.max_concurrent_streams}")
                self.streams[sid] = (dict(event.headers), bytearray())  # type: ignore[arg-type]
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_id in self.streams:
                    self.streams[event.stream_id][1].extend(event.data)
            elif isinstance(event, h2.events.StreamEnded):
                self.arrived(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                if self.streams.pop(event.stream_id, None) is not None:
                    self.open -= 1
            elif isinstance(event, h2.events.PingReceived):
                self.server.pings += 1
                self.server.ping_event.set()
        self.flush()

    def arrived(self, stream_id: int) -> None:
        entry = self.streams.get(stream_id)
        if entry is None:
            return
        headers, body = entry
        if self.server.record:
            self.server.wire.append(WireRequest(self.number, stream_id, headers, bytes(body),
                                                self.server.clock()))
        if self.goaway_last is not None and stream_id > self.goaway_last:
            return  # after our GOAWAY: never processed, the client must resend
        if self.server.stall_all:
            self.server.stalled += 1
            return
        fault = self.server.fault_for(headers, bytes(body))
        if fault is not None and fault.goaway:
            self.goaway(stream_id - 2)  # this one (and any later) refused, unprocessed
            return
        if fault is not None and fault.reset is not None:
            self.streams.pop(stream_id, None)
            self.open -= 1
            self.h2.reset_stream(stream_id, fault.reset)
            self.flush()
            return
        delay = self.server.response_delay + (fault.delay if fault is not None else 0.0)
        if delay:
            asyncio.get_running_loop().call_later(delay, self.respond, stream_id, fault)
        else:
            self.respond(stream_id, fault)

    def respond(self, stream_id: int, fault: Fault | None = None) -> None:
        entry = self.streams.get(stream_id)
        if entry is None or self.transport is None or self.transport.is_closing():
            return
        if fault is not None and fault.drop:
            self.abort()  # the request arrived; its connection dies before any answer
            return
        if fault is not None and fault.stall:
            self.server.stalled += 1
            return  # never answered; the connection goes on serving others
        del self.streams[stream_id]
        headers, body = entry
        answer = self.server.answer(self.number, stream_id, headers, bytes(body))
        if answer.fault is not None and answer.fault.drop:
            self.abort()
            return
        self.served += 1
        goaway_after = self.server.goaway_after
        if goaway_after is not None and self.served == goaway_after:
            self.goaway(stream_id, close=False)  # closed below, once this one is answered
        response = [(":status", str(answer.status)), *answer.headers]
        try:
            self.h2.send_headers(stream_id, response, end_stream=not answer.body)
            if answer.body:
                self.h2.send_data(stream_id, answer.body, end_stream=True)
        except h2.exceptions.ProtocolError:
            pass  # the client reset it meanwhile
        self.open -= 1
        self.server.answered += 1
        self.flush()
        self.maybe_close()

    def goaway(self, last: int | None = None, close: bool = True) -> None:
        """A graceful GOAWAY, written raw so that h2 keeps letting us answer the
        streams we promised to (ids <= last)."""
        if self.transport is None or self.goaway_last is not None:
            return
        self.goaway_last = self.highest if last is None else max(0, last)
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.goaway_last
        frame.error_code = 0
        frame.additional_data = b'{"reason":"Shutdown"}'
        self.transport.write(self.h2.data_to_send() + frame.serialize())
        if close:
            self.maybe_close()

    def maybe_close(self) -> None:
        if self.goaway_last is None or self.transport is None:
            return
        if not any(sid <= self.goaway_last for sid in self.streams):
            self.flush()
            self.transport.close()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def count_by(requests: list[Any], key: Any) -> dict[Any, int]:
    """How many of `requests` share each `key(request)`."""
    counts: dict[Any, int] = {}
    for r in requests:
        k = key(r)
        counts[k] = counts.get(k, 0) + 1
    return counts
