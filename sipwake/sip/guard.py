"""What one source may take from the SIP listeners: messages per second, connections,
and how long a connection may hold a socket without doing anything useful.

- `SourceLimiter`: a token bucket per source address over every SIP message it sends
  (UDP datagram or stream message). Over it, the message is dropped before it is
  parsed: one address flooding REGISTERs can't take the loop from everyone else.
  Trusted peers (trunks) are not limited.
- `ConnectionGuard`: caps on stream connections (TCP, TLS, WS) per address and in
  total (the total kept below the process's open-file limit, so the HTTP API and the
  store always find a descriptor), a time limit to finish a message once its first
  byte came, and an idle limit for connections that carry no registration. At the
  total cap a new connection takes the place of the connection idle the longest
  that carries no registration; registered phones are never pushed out.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("sipwake.sip.guard")

MAX_SOURCES = 100_000  # buckets kept; a flood of distinct addresses starts them over
LOG_EVERY = 60.0  # seconds between log lines about one source


class Guarded(Protocol):
    """A stream connection as the guard sees it."""

    flow: str
    peer_host: str
    last_active: float  # monotonic time of the last byte received
    partial_since: float  # monotonic time a message began arriving; 0: none pending

    def abort(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    source_rate: float = 200.0  # SIP messages per second per address (0: no limit)
    source_burst: int = 400
    max_connections: int = 10_000  # stream connections in total
    max_per_address: int = 100
    message_timeout: float = 30.0  # seconds to finish a message on a stream
    idle_timeout: float = 120.0  # seconds a connection without a registration may idle


class SourceLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        exempt: Callable[[str], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.exempt = exempt
        self.clock = clock
        self._buckets: dict[str, list[float]] = {}  # host → [tokens, at, exempt 0/1]
        self._logged: dict[str, float] = {}
        self.dropped = 0

    def allow(self, host: str) -> bool:
        """Whether a message from `host` may be processed (a token is taken)."""
        if self.rate <= 0:
            return True
        now = self.clock()
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= MAX_SOURCES:
                self._buckets.clear()
            bucket = self._buckets[host] = [self.burst, now, 1.0 if self.exempt(host) else 0.0]
        if bucket[2]:
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        self.dropped += 1
        if now - self._logged.get(host, -LOG_EVERY) >= LOG_EVERY:
            if len(self._logged) >= MAX_SOURCES:
                self._logged.clear()
            self._logged[host] = now
            log.warning("%s sends over %g SIP messages/s: the excess is dropped", host, self.rate)
        return False


class ConnectionGuard:
    def __init__(
        self,
        limits: Limits,
        has_binding: Callable[[str], bool] = lambda flow: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.max_total = limits.max_connections
        self.has_binding = has_binding  # the registrar's: a flow some binding uses
        self.clock = clock
        self._per_host: dict[str, int] = {}
        # every open connection, the one idle the longest first
        self._by_activity: OrderedDict[Guarded, None] = OrderedDict()
        self._partial: set[Guarded] = set()  # with a message begun and not finished
        self._logged: dict[str, float] = {}
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_activity)

    def opened(self, conn: Guarded) -> bool:
        """A connection was accepted: False when it must be closed at once."""
        host = conn.peer_host
        if self._per_host.get(host, 0) >= self.limits.max_per_address:
            self._refuse(host, f"over {self.limits.max_per_address} connections from it")
            return False
        if len(self._by_activity) >= self.max_total and not self._evict_one():
            self._refuse(host, f"{self.max_total} connections open, all registered")
            return False
        self._per_host[host] = self._per_host.get(host, 0) + 1
        conn.last_active = self.clock()
        self._by_activity[conn] = None
        return True

    def closed(self, conn: Guarded) -> None:
        """`conn` is gone (or is being closed by us): it counts no more."""
        if conn not in self._by_activity:
            return  # refused at once, or counted out already
        del self._by_activity[conn]
        self._partial.discard(conn)
        left = self._per_host[conn.peer_host] - 1
        if left:
            self._per_host[conn.peer_host] = left
        else:
            del self._per_host[conn.peer_host]

    def received(self, conn: Guarded, pending: bool) -> None:
        """Bytes came from `conn`; `pending`: part of a message is still to come."""
        now = self.clock()
        conn.last_active = now
        if conn not in self._by_activity:
            return
        self._by_activity.move_to_end(conn)
        if not pending:
            conn.partial_since = 0.0
            self._partial.discard(conn)
        elif not conn.partial_since:
            conn.partial_since = now  # a trickle of bytes doesn't restart this clock
            self._partial.add(conn)

    def sweep(self) -> int:
        """Close connections that sat on a half message too long, or idled without a
        registration; returns how many went. Run every few seconds."""
        now = self.clock()
        limits = self.limits
        slow = [c for c in self._partial if now - c.partial_since > limits.message_timeout]
        for conn in slow:
            log.info("%s from %s: no complete message in %.0f s; closed", conn.flow,
                     conn.peer_host, limits.message_timeout)  # fmt: skip
            self.closed(conn)
            conn.abort()
        idle = []
        for conn in self._by_activity:  # the one idle the longest first
            if now - conn.last_active <= limits.idle_timeout:
                break
            if not self.has_binding(conn.flow):
                idle.append(conn)
        for conn in idle:
            log.debug("%s from %s: idle without a registration; closed", conn.flow,
                      conn.peer_host)  # fmt: skip
            self.closed(conn)
            conn.abort()
        return len(slow) + len(idle)

    def _evict_one(self) -> bool:
        """Make room: close the connection idle the longest that carries no binding."""
        for n, conn in enumerate(self._by_activity):
            if n >= 256:
                break  # bound the work: past these, everything is registered and busy
            if not self.has_binding(conn.flow):
                self.closed(conn)
                conn.abort()
                self.evicted += 1
                return True
        return False

    def _refuse(self, host: str, why: str) -> None:
        self.refused += 1
        now = self.clock()
        if now - self._logged.get(host, -LOG_EVERY) >= LOG_EVERY:
            if len(self._logged) >= MAX_SOURCES:
                self._logged.clear()
            self._logged[host] = now
            log.warning("stream connection from %s refused: %s", host, why)
