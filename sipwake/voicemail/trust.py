"""Who may tell us about mailboxes, and which URIs are ours.

A message-summary NOTIFY is accepted from `[sip] trusted_peers` (IPs/CIDRs of voicemail
servers) or from a user listed in `[voicemail] notifiers` who authenticates by digest.
"""

from __future__ import annotations

from collections.abc import Callable

from sipwake.sip.peer import Peer, TrustedPeers
from sipwake.sip.uri import URI


class Trust:
    def __init__(
        self,
        domain: str,
        trusted_peers: TrustedPeers,
        notifiers: list[str],
        is_us: Callable[[str, int | None, bool], bool],
    ) -> None:
        self.domain = domain.lower()
        self.peers = trusted_peers
        # "vm" or "vm@domain": both name the local user vm
        self.notifiers = frozenset(n.split("@")[0].removeprefix("sip:") for n in notifiers)
        self.is_us = is_us  # the transport's: our own addresses

    def trusted(self, source: Peer | None) -> bool:
        """The request comes from a trusted peer's address."""
        return self.peers.trusts(source)

    def is_notifier(self, username: str) -> bool:
        return username in self.notifiers

    def local_user(self, uri: URI) -> str | None:
        """The user part of a SIP URI naming one of our users (our domain, or one of
        our own addresses: devices and voicemail servers often use the server's IP)."""
        if not uri.is_sip or not uri.user:
            return None
        if uri.host.strip("[]") == self.domain or self.is_us(uri.host, uri.port, uri.secure):
            return uri.user
        return None
