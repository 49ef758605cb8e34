"""Who may tell us about mailboxes, and which URIs are ours.

A message-summary NOTIFY is accepted from `[sip] trusted_peers` (IPs/CIDRs of voicemail
servers) or from a user listed in `[voicemail] notifiers` who authenticates by digest.
"""

from __future__ import annotations

from sipwake.sip.peer import Peer, TrustedPeers
from sipwake.sip.transport import Listener
from sipwake.sip.uri import URI


class Trust:
    def __init__(
        self,
        domain: str,
        trusted_peers: TrustedPeers,
        notifiers: list[str],
        listeners: list[Listener],
    ) -> None:
        self.domain = domain.lower()
        self.peers = trusted_peers
        # "vm" or "vm@domain": both name the local user vm
        self.notifiers = frozenset(n.split("@")[0].removeprefix("sip:") for n in notifiers)
        self.listeners = listeners  # the transport's live list (ports known after start)

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
        host = uri.host.strip("[]")
        if host == self.domain or any(
            sock.host == host and sock.port == (uri.port or 5060) for sock in self.listeners
        ):
            return uri.user
        return None
