"""Where a SIP message came from or goes to."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, init=False)
class Peer:
    """A remote transport address, plus the connection it is reached over.

    `flow` names an open TCP/TLS/WS connection (RFC 5626 flow); "" means UDP, or
    "open a new connection" for stream transports.
    """

    transport: str  # "udp" | "tcp" | "tls" | "ws"
    host: str
    port: int
    flow: str = ""

    def __init__(self, transport: str, host: str, port: int, flow: str = "") -> None:
        # written out, not generated: see speedups.py on dataclasses
        object.__setattr__(self, "transport", transport)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "flow", flow)

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    @classmethod
    def parse(cls, text: str, flow: str = "") -> Peer:
        """Inverse of str(): "udp:1.2.3.4:5060", "tcp:[::1]:5060"."""
        transport, _, rest = text.partition(":")
        host, _, port = rest.rpartition(":")
        if not transport or not host or not port.isdigit():
            raise ValueError(f"bad peer {text!r}")
        return cls(transport, host.strip("[]"), int(port), flow)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


class TrustedPeers:
    """`[sip] trusted_peers`: IPs or CIDRs (trunks, voicemail servers) whose requests
    are taken without a digest challenge."""

    def __init__(self, specs: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(p, strict=False) for p in specs]
        # host → verdict: every request asks, from the few addresses phones and trunks
        # use; parsing the address and walking the networks each time was ~5 % of a
        # REGISTER. Bounded: sources are chosen by whoever sends.
        self._known: dict[str, bool] = {}

    def trusts(self, source: Peer | None) -> bool:
        return source is not None and self.trusts_host(source.host)

    def trusts_host(self, host: str) -> bool:
        if not self.networks:
            return False
        known = self._known.get(host)
        if known is None:
            known = self._check(host)
            if len(self._known) >= _KNOWN_MAX:
                self._known.clear()
            self._known[host] = known
        return known

    def _check(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in net for net in self.networks)


_KNOWN_MAX = 65536
