"""Failed authentication is throttled per source address (DESIGN "Contract details,
second round"): more than `limit` failed checks from one address within `window`
seconds, and for the next `block` seconds every request from it that needs
authentication is refused without its credentials being looked at — a right
password too. SIP digest and HTTP Basic/Digest count together.

IPv6 sources count per /64: one host there may use any address of its network.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("sipwake.auth")

MAX_SOURCES = 100_000  # addresses tracked; beyond it the ones not blocked are dropped


@functools.lru_cache(maxsize=4096)  # the same few addresses ask again and again
def source_key(host: str) -> str:
    """What is counted: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(slots=True)
class _Source:
    failures: deque[float] = field(default_factory=deque)
    until: float = 0.0  # blocked until (clock time); 0: not blocked


class AuthThrottle:
    def __init__(
        self,
        limit: int = 20,
        window: float = 60.0,
        block: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.limit = limit
        self.window = window
        self.block = block
        self.clock = clock
        self.max_sources = max_sources
        self._sources: dict[str, _Source] = {}
        self.blocks = 0  # sources blocked so far (a metric)
        # a cluster's other nodes are told of each failure (sipwake.cluster)
        self.on_failure: Callable[[str], None] | None = None

    def blocked(self, host: str) -> float:
        """Seconds `host` stays refused; 0 when it may try."""
        if not self._sources:
            return 0.0  # nobody failed lately: every authenticated request asks this
        source = self._sources.get(source_key(host))
        if source is None or not source.until:
            return 0.0
        left = source.until - self.clock()
        if left > 0:
            return left
        source.until = 0.0
        return 0.0

    def failed(self, host: str, elsewhere: bool = False) -> None:
        """One failed check from `host` (on another node: `elsewhere`); the one over
        the limit starts a block."""
        if self.limit <= 0:
            return
        if not elsewhere and self.on_failure is not None:
            self.on_failure(host)
        key = source_key(host)
        now = self.clock()
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= self.max_sources:
                self._forget(now)
            source = self._sources[key] = _Source(deque(maxlen=self.limit + 1))
        source.failures.append(now)
        while source.failures and now - source.failures[0] > self.window:
            source.failures.popleft()
        if len(source.failures) > self.limit and source.until <= now:
            source.until = now + self.block
            source.failures.clear()
            self.blocks += 1
            # one line per source per block, however hard it keeps trying
            log.warning("auth: %s refused for %.0f s after over %d failed attempts in %.0f s",
                        key, self.block, self.limit, self.window)  # fmt: skip

    def _forget(self, now: float) -> None:
        quiet = [
            k for k, s in self._sources.items()
            if s.until <= now and (not s.failures or now - s.failures[-1] > self.window)
        ]  # fmt: skip
        for k in quiet:
            del self._sources[k]
        if len(self._sources) >= self.max_sources:  # a flood of addresses: keep the blocks
            self._sources = {k: s for k, s in self._sources.items() if s.until > now}
