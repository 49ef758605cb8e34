"""A lean HTTP/2 client for one origin: a few long-lived connections, many streams.

Built directly on h2 and an asyncio protocol because the APNs path must carry
thousands of requests a second on one core (httpx adds a task and several layers
per request). What it takes care of:

- never more concurrent streams on a connection than the server's
  SETTINGS_MAX_CONCURRENT_STREAMS allows; when every connection is full it opens
  another (up to `max_connections`, one at a time), then queues;
- one deadline per request, covering the wait for a connection or a free stream
  and the stream itself; when it passes the stream is reset (the connection
  stays up for the others) and the request fails with H2Error;
- GOAWAY: the connection takes no new streams, streams the server promised to
  finish (id <= last_stream_id) complete, the others fail with StreamRefused (the
  server never processed them). `post` sends a refused request again once, on
  another connection; refused twice, it is the caller's to retry after a backoff
  (a server refusing everything must not see each request three times in a row).
  A request that got an answer, or may have been processed, is never resent here;
- connections are kept open while idle, with a PING now and then to notice a
  dead peer (APNs wants long-lived connections);
- outgoing frames are written once per loop iteration, not once per request; an
  urgent request (a call push) is written at once;
- `post` calls nothing that needs the current task (asyncio.timeout) before its first
  wait: a push may be started from a callback or inside another task (Tasks.start).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, GoAwayFrame

from sipwake.push.tls import Origin

log = logging.getLogger("sipwake.push.h2")

Headers = list[tuple[bytes, bytes]]


class H2Error(Exception):
    """No response: connection failed or lost, stream reset, or timeout."""


class StreamRefused(H2Error):
    """The server did not process the request (GOAWAY, REFUSED_STREAM): safe to resend."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    sent_at: float = 0.0  # perf_counter when the request went to the socket


_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    # Our own headers are built lower-case and well-formed; skipping h2's per-header
    # checks and rewriting is a measurable share of the per-request cost. Leaving the
    # authorization header indexable lets HPACK send the shared JWT once per connection.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    # Response headers are only read for :status (parsed defensively) and a few
    # values; h2's per-header checks cost more than the rest of the response path.
    validate_inbound_headers=False,
)


def unique(name: bytes, value: bytes) -> hpack.NeverIndexedHeaderTuple:
    """A header whose value changes with every request (path, apns-id, ...).

    Kept out of the HPACK dynamic table: indexing it would only evict the values
    that do repeat (the JWT, topic, push type) and make every lookup in that
    table longer.
    """
    return hpack.NeverIndexedHeaderTuple(name, value)


class PlainEncoder(hpack.Encoder):
    """HPACK without Huffman coding."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        # Pure-Python Huffman coding of every literal (device token, apns-id) was the
        # largest single cost per request; the bytes it saves do not matter here.
        return super().encode(headers, huffman=False)


class _H2(h2.connection.H2Connection):
    def __init__(self) -> None:
        super().__init__(config=_CONFIG)
        self.encoder = PlainEncoder()
        self.outbound_open = 0  # maintained by H2Connection

    @property
    def open_outbound_streams(self) -> int:
        # h2 counts open streams by walking every stream it holds, closed ones
        # included, on each new request: O(concurrency) per request. We know the
        # count, and reap closed streams ourselves (see reap()).
        return self.outbound_open

    def reap(self, stream_id: int) -> None:
        """Forget a closed stream, as h2's own stream counting would have."""
        stream = self.streams.get(stream_id)
        if stream is not None and stream.closed:
            del self.streams[stream_id]
            self._closed_streams[stream_id] = stream.closed_by

    def _receive_goaway_frame(
        self, frame: GoAwayFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        frames, events = super()._receive_goaway_frame(frame)
        # h2 closes its state machine on GOAWAY and would then reject the responses
        # the server still owes us for streams <= last_stream_id (a graceful
        # shutdown, RFC 9113 §6.8). Keep reading; the connection opens no new streams.
        self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return frames, events


class _Stream:
    __slots__ = ("body", "future", "headers", "pending", "sent_at", "status", "timer")

    def __init__(self, future: asyncio.Future[Response]) -> None:
        self.future = future
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.pending = b""  # request body still waiting for flow-control window
        self.sent_at = 0.0
        self.timer: asyncio.TimerHandle | None = None


class H2Connection(asyncio.Protocol):
    def __init__(self, pool: H2Pool, ping_interval: float) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._h2 = _H2()
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._blocked: set[int] = set()
        self._flush_scheduled = False
        self._unsent: list[_Stream] = []  # started since the last write
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.draining = False  # no new streams (GOAWAY received, or closing)
        self.closed = False
        self._ping_interval = ping_interval
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_outstanding = False
        self._last_seen = self._loop.time()

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
            },
        )
        self._h2.initiate_connection()
        self._flush()
        if self._ping_interval > 0:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._keepalive)

    def data_received(self, data: bytes) -> None:
        self._last_seen = self._loop.time()
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("HTTP/2 protocol error from %s: %s", self._pool.origin, exc)
            self._flush()
            self.abort(H2Error(f"protocol error: {exc}"))
            return
        try:
            for event in events:
                self._handle(event)
        except Exception as exc:  # a bug or a value we did not foresee: drop this connection
            log.exception("HTTP/2 connection to %s failed", self._pool.origin)
            self.abort(H2Error(f"connection failed: {exc!r}"))
            return
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.draining = True
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        error = H2Error(f"connection to {self._pool.origin} lost" + (f": {exc}" if exc else ""))
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved by the pool's connect; silence "never retrieved"
            # Never usable: the pool's _connect tells the waiters (with this error). Waking
            # them here as if capacity had changed made each of them connect again at once,
            # in a loop, for as long as the server kept resetting new connections.
            return
        streams, self._streams = self._streams, {}
        for stream_id, stream in streams.items():
            self._finish(stream_id, stream, error)
        self._pool._connection_gone(self)

    # -- requests --------------------------------------------------------------

    def has_capacity(self) -> bool:
        return (
            not self.draining
            and len(self._streams) < self._h2.remote_settings.max_concurrent_streams
        )

    def start(
        self, headers: Headers, body: bytes, timeout: float, urgent: bool = False
    ) -> tuple[int, asyncio.Future[Response]]:
        """Open a stream for one request. Caller checked has_capacity(). `urgent`: its
        frames are written now, else at the end of the loop turn with the others."""
        try:
            stream_id = self._h2.get_next_available_stream_id()
            self._h2.send_headers(stream_id, headers, end_stream=not body)
        except h2.exceptions.NoAvailableStreamIDError:
            self._drain()
            raise StreamRefused("stream ids exhausted") from None
        except h2.exceptions.ProtocolError as exc:  # e.g. TooManyStreamsError
            raise StreamRefused(str(exc)) from None
        stream = _Stream(self._loop.create_future())
        self._streams[stream_id] = stream
        self._h2.outbound_open = len(self._streams)
        if body:
            stream.pending = body
            self._send_body(stream_id, stream)
        stream.timer = self._loop.call_later(timeout, self._timed_out, stream_id)
        self._unsent.append(stream)
        if urgent:
            # a call push must not wait for the rest of the loop turn (the SIP work
            # queued behind it): written at once, with whatever else is unsent
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return stream_id, stream.future

    def cancel(self, stream_id: int) -> None:
        """The caller gave up on a request (task cancelled)."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self._reset(stream_id, ErrorCodes.CANCEL)
            self._finish(stream_id, stream, None)

    def close(self) -> None:
        if self.closed or self._transport is None:
            return
        self._drain()
        try:
            self._h2.close_connection()
        except h2.exceptions.ProtocolError:
            pass
        self._flush()
        self._transport.close()

    def abort(self, error: H2Error) -> None:
        streams, self._streams = self._streams, {}
        for stream_id, stream in streams.items():
            self._finish(stream_id, stream, error)
        self._drain()
        if self._transport is not None:
            self._transport.abort()

    # -- internals -------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._on_response(event)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._on_end(event.stream_id or 0)
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.WindowUpdated):
            self._on_window()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._on_settings()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)
        elif isinstance(event, h2.events.PingAckReceived):
            self._ping_outstanding = False

    def _on_response(self, event: h2.events.ResponseReceived) -> None:
        """The response's headers: its status (0 when unreadable), the others by name."""
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        for name, value in event.headers:
            key = bytes(name).decode("latin-1")
            if key == ":status":
                stream.status = int(value) if value.isdigit() else 0
            else:
                stream.headers[key] = bytes(value).decode("latin-1")

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        self._h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
        stream = self._streams.get(stream_id)
        if stream is not None and event.data:
            stream.body += event.data

    def _on_end(self, stream_id: int) -> None:
        """The response is complete."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            response = Response(stream.status, stream.headers, stream.body, stream.sent_at)
            self._finish(stream_id, stream, None, response)

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        """The server reset a stream: refused (never processed, safe to resend) or not."""
        stream_id = event.stream_id or 0
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        if event.error_code == ErrorCodes.REFUSED_STREAM:
            self._finish(stream_id, stream, StreamRefused("stream refused"))
        else:
            self._finish(stream_id, stream, H2Error(f"stream reset: {event.error_code!r}"))

    def _on_window(self) -> None:
        """Flow-control window opened: bodies waiting for it go on."""
        for stream_id in list(self._blocked):
            blocked = self._streams.get(stream_id)
            self._blocked.discard(stream_id)
            if blocked is not None:
                self._send_body(stream_id, blocked)

    def _on_settings(self) -> None:
        """The server's SETTINGS: the first make the connection ready; any may change
        how many streams it takes."""
        if not self.ready.done():
            self.ready.set_result(None)
        self._pool._capacity_changed()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        last = event.last_stream_id if event.last_stream_id is not None else 0
        log.info(
            "GOAWAY from %s (%r, last stream %d%s)",
            self._pool.origin,
            event.error_code,
            last,
            f", {event.additional_data!r}" if event.additional_data else "",
        )
        self._drain()
        for stream_id in [s for s in self._streams if s > last]:
            self._finish(stream_id, self._streams.pop(stream_id), StreamRefused("GOAWAY"))
        if not self._streams and self._transport is not None:
            self._transport.close()

    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        while stream.pending:
            window = min(
                self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
            )
            if window <= 0:
                self._blocked.add(stream_id)
                return
            chunk, stream.pending = stream.pending[:window], stream.pending[window:]
            self._h2.send_data(stream_id, chunk, end_stream=not stream.pending)

    def _finish(
        self,
        stream_id: int,
        stream: _Stream,
        error: BaseException | None,
        response: Response | None = None,
    ) -> None:
        """Settle a stream already removed from self._streams."""
        self._h2.outbound_open = len(self._streams)
        if stream.pending:  # the server answered before taking the whole body
            stream.pending = b""
            self._reset(stream_id, ErrorCodes.CANCEL)
        self._h2.reap(stream_id)
        if stream.timer is not None:
            stream.timer.cancel()
        if not stream.future.done():
            if response is not None:
                stream.future.set_result(response)
            elif error is not None:
                stream.future.set_exception(error)
            else:
                stream.future.cancel()
        if self.draining and not self._streams and self._transport is not None:
            self._transport.close()
        self._pool._slot_freed(self)

    def _timed_out(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.timer = None
            self._reset(stream_id, ErrorCodes.CANCEL)
            self._finish(stream_id, stream, H2Error("request timed out"))

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        self._blocked.discard(stream_id)
        try:
            self._h2.reset_stream(stream_id, code)
        except h2.exceptions.ProtocolError:
            pass  # already closed on the h2 side
        self._flush()

    def _drain(self) -> None:
        if not self.draining:
            self.draining = True
            self._pool._connection_gone(self)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            if self._unsent:
                now = time.perf_counter()
                for stream in self._unsent:
                    stream.sent_at = now
                self._unsent.clear()

    def _keepalive(self) -> None:
        if self.closed:
            return
        if self._ping_outstanding:  # no answer to the last PING in a whole interval
            log.warning("no PING answer from %s, dropping the connection", self._pool.origin)
            self.abort(H2Error("connection dead (no PING answer)"))
            return
        if self._loop.time() - self._last_seen >= self._ping_interval and not self.draining:
            self._h2.ping(b"sipwake!")
            self._ping_outstanding = True
            self._flush()
        self._ping_timer = self._loop.call_later(self._ping_interval, self._keepalive)


class H2Pool:
    """HTTP/2 connections to one origin, shared by all requests."""

    def __init__(
        self,
        origin: Origin,
        ssl_context: ssl.SSLContext | None,
        *,
        max_connections: int = 4,
        connect_timeout: float = 10.0,
        request_timeout: float = 10.0,
        ping_interval: float = 60.0,
    ) -> None:
        if origin.scheme == "https" and ssl_context is None:
            raise ValueError("https origin needs an SSL context")
        self.origin = origin
        self._ssl = ssl_context if origin.scheme == "https" else None
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._ping_interval = ping_interval
        self._prefix: Headers = [
            (b":method", b"POST"),
            (b":scheme", origin.scheme.encode()),
            (b":authority", origin.authority.encode()),
        ]
        self._conns: list[H2Connection] = []
        self._all: set[H2Connection] = set()  # includes draining ones, for close()
        self._connecting: asyncio.Task[None] | None = None
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self.connections_opened = 0

    async def post(
        self,
        path: bytes,
        headers: Headers,
        body: bytes,
        time_left: float | None = None,
        urgent: bool = False,
    ) -> Response:
        """POST `body` to `path`. Raises H2Error when no response arrives within
        `time_left` seconds (default: the pool's request_timeout), StreamRefused when
        the request was refused unprocessed twice (it may be sent again later).
        `urgent`: written at once, not at the end of the loop turn (H2Connection.start)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._request_timeout if time_left is None else time_left)
        request = [*self._prefix, unique(b":path", path), *headers]
        refused: H2Connection | None = None
        while True:
            conn = self._ready_connection(avoid=refused)
            if conn is None:
                conn = await self._connection(deadline, avoid=refused)
            left = deadline - loop.time()
            if left <= 0:
                raise H2Error("request timed out")
            try:
                stream_id, future = conn.start(request, body, left, urgent)
            except StreamRefused:
                if refused is not None:
                    raise
                refused = conn
                continue
            try:
                return await future
            except StreamRefused:
                if refused is not None:
                    raise StreamRefused(f"{self.origin} refused the request twice") from None
                refused = conn  # never processed: once more, on another connection
            except asyncio.CancelledError:
                conn.cancel(stream_id)
                raise

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        self._wake_all(H2Error("pool closed"))
        for conn in list(self._all):
            conn.close()
        self._conns.clear()

    async def _connection(self, deadline: float, avoid: H2Connection | None) -> H2Connection:
        """A connection with a free stream (other than `avoid`), waiting for one (or
        opening one) until `deadline` (loop time). A timer per wait, not asyncio.timeout:
        that one needs the current task before the first wait (see the module's doc)."""
        return await self._acquire(deadline, avoid=avoid)

    def _ready_connection(self, avoid: H2Connection | None = None) -> H2Connection | None:
        """A connection with a free stream, `avoid` (which refused a stream but is still
        usable, e.g. REFUSED_STREAM) only when no other connection may be opened."""
        if self._closed:
            raise H2Error("pool closed")
        fallback = None
        for conn in self._conns:
            if conn.has_capacity():
                if conn is not avoid:
                    return conn
                fallback = conn
        if fallback is not None and len(self._conns) >= self._max_connections:
            return fallback
        return None

    async def _acquire(self, deadline: float, avoid: H2Connection | None = None) -> H2Connection:
        """A connection with a free stream (other than `avoid`), opening one if allowed;
        H2Error once `deadline` (loop time) passes."""
        loop = asyncio.get_running_loop()
        first = True
        while True:
            conn = self._ready_connection(avoid)
            if conn is not None:
                return conn
            if loop.time() >= deadline:
                raise H2Error(f"request timed out waiting for a connection to {self.origin}")
            if self._connecting is None and len(self._conns) < self._max_connections:
                self._connecting = asyncio.ensure_future(self._connect())
            waiter = loop.create_future()
            # Someone woken up who lost the race for a slot goes back to the front.
            if first:
                self._waiters.append(waiter)
            else:
                self._waiters.appendleft(waiter)
            first = False
            timer = loop.call_at(deadline, self._wait_over, waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
            finally:
                timer.cancel()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        conn = H2Connection(self, self._ping_interval)
        try:
            async with asyncio.timeout(self._connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: conn,
                    self.origin.host,
                    self.origin.port,
                    ssl=self._ssl,
                    server_hostname=self.origin.host if self._ssl else None,
                )
                if self._ssl is not None:
                    ssl_object = transport.get_extra_info("ssl_object")
                    if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                        transport.close()
                        raise H2Error("server did not negotiate HTTP/2 (ALPN h2)")
                self._all.add(conn)
                await conn.ready  # the server's SETTINGS tell us how many streams we may open
        except asyncio.CancelledError:
            self._all.discard(conn)
            self._connecting = None
            raise
        except Exception as exc:  # OSError, TimeoutError, H2Error, ssl errors, ...
            self._all.discard(conn)
            conn.draining = True  # gone before it was ready: no "capacity" wake-up from it
            conn.abort(H2Error(f"cannot connect: {exc}"))  # e.g. no SETTINGS in time
            log.warning("cannot connect to %s: %s", self.origin, exc)
            self._connecting = None
            self._wake_all(H2Error(f"cannot connect to {self.origin}: {exc}"))
            return
        self._connecting = None
        self.connections_opened += 1
        if conn.draining:  # went away before it was ready
            self._wake_all()
            return
        self._conns.append(conn)
        self._wake_all()

    def _wait_over(self, waiter: asyncio.Future[None]) -> None:
        """A wait for a connection reached its deadline: the waiter looks once more (a
        slot may just have freed), then gives up."""
        if not waiter.done():
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            waiter.set_result(None)

    # -- callbacks from connections --------------------------------------------

    def _slot_freed(self, conn: H2Connection) -> None:
        if self._waiters and conn.has_capacity():
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _capacity_changed(self) -> None:
        self._wake_all()

    def _connection_gone(self, conn: H2Connection) -> None:
        if conn in self._conns:
            self._conns.remove(conn)
        if conn.closed:
            self._all.discard(conn)
        self._wake_all()

    def _wake_all(self, error: Exception | None = None) -> None:
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
