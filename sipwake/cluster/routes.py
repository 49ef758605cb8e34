"""Internal routes: how a node reaches a phone whose connection another node holds.

A binding names the node it registered with (`Binding.node`, that node's internal
address "tcp:host:port"). Seen from another node, the binding is reached *through*
its node: next hop that address, and a Route naming it with the binding's identity
and an HMAC of the shared `[sip] secret` — nodes trust each other's requests by that
signature, never by source address (DESIGN "Cluster"). The owning node takes the
signed Route off, checks it and sends the request down the phone's own connection
(relay.py). Phones never see these Routes: the owner removes them before forwarding.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace

from sipwake.sip.message import Message
from sipwake.sip.uri import NameAddr
from sipwake.store.models import Binding

TARGET, SIGNATURE = "sw-b", "sw-sig"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class InternalRoutes:
    def __init__(self, secret: bytes, node: str) -> None:
        self._key = hashlib.sha256(b"sipwake internal route|" + secret).digest()
        self.node = node  # this node's internal address, "tcp:host:port"

    def _sign(self, target: str) -> str:
        return _b64(hmac.new(self._key, target.encode(), hashlib.sha256).digest()[:18])

    def route_to(self, binding: Binding) -> str:
        """The Route that takes a request to `binding` through the node holding it."""
        transport, _, hostport = binding.node.partition(":")
        target = _b64(f"{binding.aor}\n{binding.key}".encode())
        return (
            f"<sip:{hostport};transport={transport};lr;"
            f"{TARGET}={target};{SIGNATURE}={self._sign(target)}>"
        )

    def view(self, binding: Binding) -> Binding:
        """Another node's binding as this node uses it: reached through that node (its
        source address and connection mean nothing here)."""
        return replace(
            binding,
            received=binding.node,
            flow="",
            path=(self.route_to(binding), *binding.path),
        )

    def accept(self, request: Message) -> tuple[str, str] | None:
        """If the top Route is a signed internal one: take it off and return the
        (aor, key) of the binding it names. None for any other request; a Route with a
        bad signature is left alone (it then routes like any foreign Route)."""
        routes = request.get_all("Route")
        if not routes or SIGNATURE not in routes[0]:
            return None
        try:
            params = NameAddr.parse(routes[0]).uri.params
        except ValueError:
            return None
        target, sig = params.get(TARGET) or "", params.get(SIGNATURE) or ""
        if not target or not hmac.compare_digest(sig, self._sign(target)):
            return None
        try:
            aor, _, key = _unb64(target).decode().partition("\n")
        except (ValueError, UnicodeDecodeError):
            return None
        request.pop_first("Route")
        return aor, key
