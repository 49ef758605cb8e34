"""This node's part in a cluster: what it tells the others, and what it does with
what they tell it (DESIGN "Cluster (settled)").

- a REGISTER here → "reg" (the binding, the device): every node knows the binding
  (reached through us, routes.py) and forks its parked calls to it (fork-late);
- a binding gone here → "unbind"; a device written here → "dev" (caches dropped);
- a token taken from a shared rate limit → "took"; a failed authentication →
  "authfail"; a digest nonce-count used → "nc": limits, the throttle and replay
  protection count across the cluster (each node applies the others' events to its
  own counters, so a decision never waits for Redis).
Losing the bus loses none of the state that matters: bindings are re-read from the
store when it comes back, and until then each node counts alone.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from sipwake.auth.throttle import AuthThrottle
from sipwake.cluster.bus import Bus
from sipwake.cluster.routes import InternalRoutes
from sipwake.ratelimit import RateLimiter
from sipwake.sip.digest import DigestAuth
from sipwake.sip.message import Message
from sipwake.sip.peer import Peer
from sipwake.sip.transaction import COOKIE
from sipwake.store.errors import log_failure
from sipwake.store.models import Binding, Device

log = logging.getLogger("sipwake.cluster")

ADOPT_EVERY = 5.0  # seconds between looks for pushes left by a node gone


# as another node sees it: not when our store's copy lapses
BINDING_FIELDS = tuple(f.name for f in dataclasses.fields(Binding) if f.name != "stored_until")
DEVICE_FIELDS = tuple(f.name for f in dataclasses.fields(Device))


def _fields(record: object, names: tuple[str, ...]) -> dict[str, Any]:
    """A flat record's fields (dataclasses.asdict copies deep, and costs ten times)."""
    return {name: getattr(record, name) for name in names}


class Location(Protocol):
    """The registrar: other nodes' bindings kept as reached from here."""

    def remote_registered(self, binding: Binding) -> Binding: ...

    def remote_removed(self, aor: str, key: str, node: str) -> None: ...

    def remote_devices_changed(self, aor: str | None, device_id: str = "") -> None: ...

    def local_binding(self, aor: str, key: str) -> Binding | None: ...

    async def resync(self) -> None: ...


class RegistrationListener(Protocol):
    def on_registered(self, binding: Binding, device: Device | None, received_at: float) -> None:
        ...


class Mailboxes(Protocol):
    """The inbox: who has messages waiting, whose lane delivers them."""

    on_mail: Callable[[str], None] | None
    kick_elsewhere: Callable[[Binding], bool] | None
    on_delivery: Callable[[int], None] | None

    def mail_elsewhere(self, aor: str) -> None: ...

    def kicked(self, binding: Binding) -> None: ...

    def delivered_elsewhere(self, message_id: int) -> None: ...

    def registered_elsewhere(self, binding: Binding) -> None: ...

    async def load(self) -> None: ...


class Coalescer(Protocol):
    on_push: Callable[[str], None] | None

    def pushed_elsewhere(self, aor: str) -> None: ...


class Branches(Protocol):
    branch_tag: str


class Wire(Protocol):
    def send(self, msg: Message, peer: Peer) -> bool: ...


class Outbox(Protocol):
    """The push service's outbox: whose pushes are kept, and taking a dead node's."""

    async def outbox_nodes(self) -> list[str]: ...

    async def adopt(self, from_node: str) -> int: ...


class Spawn(Protocol):
    def __call__(self, coro: Any) -> object: ...


PICKUP = "pickup"  # an internal route's binding key for a pickup sent to the parking node


def park_prefix(node: str) -> str:
    """What starts the park ids a node makes: which node parked a call is in its
    pickup URI, so a pickup reaching another node is sent on to it."""
    return base64.b32encode(hashlib.sha256(node.encode()).digest())[:6].decode().lower()


class Cluster:
    def __init__(self, bus: Bus, routes: InternalRoutes) -> None:
        self.bus = bus
        self.routes = routes
        self.node = routes.node
        self.park_prefix = park_prefix(self.node)
        # a REGISTER on another node, after the registrar has it (the inbox's lanes)
        self._registered_elsewhere: list[Callable[[Binding], None]] = []

    # ----------------------------------------------------- the registrar's Peers
    def alive(self, node: str) -> bool:
        return self.bus.alive(node)

    def view(self, binding: Binding) -> Binding:
        return self.routes.view(binding)

    def registered(self, binding: Binding, device: Device | None) -> None:
        self.bus.publish("reg", {
            "b": _fields(binding, BINDING_FIELDS),
            "d": _fields(device, DEVICE_FIELDS) if device is not None else None,
        })  # fmt: skip

    def removed(self, binding: Binding) -> None:
        self.bus.publish("unbind", {"aor": binding.aor, "key": binding.key})

    def devices_changed(self, aor: str | None, device_id: str) -> None:
        self.bus.publish("dev", {"aor": aor, "id": device_id})

    # ------------------------------------------------------ the calls' Parks
    def parked_elsewhere(self, park_id: str, aor: str, request_uri: str) -> Binding | None:
        """A pickup for a call another node parked: a binding that routes it there."""
        node = self._node_tagged(park_id[: len(self.park_prefix)])
        if node is None:
            return None
        there = Binding(aor=aor, key=PICKUP, contact=request_uri,
                        expires_at=float("inf"), call_id="", cseq=0, node=node)  # fmt: skip
        return self.routes.view(there)

    def _node_tagged(self, prefix: str) -> str | None:
        """The live node other than this one whose park ids and branches start so."""
        for node in self.bus.nodes():
            if node != self.node and park_prefix(node) == prefix:
                return node
        return None

    # --------------------------------------------------- responses gone astray
    def tag_branches(self, uac: Branches) -> None:
        """Our Via branches carry our tag: a response the kernel hands to another
        worker of the same address (UDP, after the set of workers changed) finds us."""
        uac.branch_tag = self.park_prefix

    def stray(self, wire: Wire) -> Callable[[Message], bool]:
        """A response no transaction here expects, whose branch names another node:
        passed to that node (over its internal address)."""
        cookie = len(COOKIE)

        def forward(resp: Message) -> bool:
            vias = resp.vias
            branch = vias[0].branch if vias else ""
            if not branch.startswith(COOKIE):
                return False
            node = self._node_tagged(branch[cookie : cookie + len(self.park_prefix)])
            return node is not None and wire.send(resp, Peer.parse(node))

        return forward

    # ------------------------------------------------------------------ wiring
    def serve_location(
        self, location: Location, listeners: list[RegistrationListener], spawn: Spawn
    ) -> None:
        """Other nodes' registrations reach the registrar and, for fork-late, the
        listeners given (calls: a parked call rings wherever the device registers)."""

        def reg(node: str, data: dict[str, Any]) -> None:
            binding = Binding(**{**data["b"], "path": tuple(data["b"].get("path", ()))})
            if binding.node != node:
                return  # a node speaks only for its own bindings
            device = Device(**data["d"]) if data.get("d") else None
            view = location.remote_registered(binding)
            log.debug("cluster: %s registered on %s", binding.aor, node)
            for listener in listeners:
                listener.on_registered(view, device, time.perf_counter())
            for moved in self._registered_elsewhere:
                moved(view)

        self.bus.on("reg", reg)
        self.bus.on("unbind", lambda node, d: location.remote_removed(d["aor"], d["key"], node))
        self.bus.on("dev", lambda node, d: location.remote_devices_changed(
            d.get("aor"), str(d.get("id") or "")))  # fmt: skip

        def resync() -> None:
            spawn(location.resync())

        self.bus.on_connected.append(resync)

    def share_limiter(self, name: str, limiter: RateLimiter) -> None:
        """A rate limit that counts across the cluster."""
        limiter.on_take = lambda key: self.bus.publish("took", {"l": name, "k": key})

        def took(node: str, data: dict[str, Any]) -> None:
            if data.get("l") == name:
                limiter.consume(str(data["k"]))
                log.debug("cluster: %s counted a take by node %s", name, node)

        self.bus.on("took", took)

    def share_mail(self, inbox: Mailboxes, location: Location, spawn: Spawn) -> None:
        """Messages stored on one node are delivered by the node holding the device's
        binding (one delivery lane per device in the cluster; the store says what is
        delivered): each node knows who has mail, a new message for a device another
        node holds is that node's to send, and a delivery is told to every node (the
        sender may be waiting on another)."""
        inbox.on_mail = lambda aor: self.bus.publish("mail", {"aor": aor})
        self.bus.on("mail", lambda node, d: inbox.mail_elsewhere(str(d["aor"])))

        def kick(binding: Binding) -> bool:
            if not binding.node or binding.node == self.node or not self.bus.connected_at:
                return False  # ours; or off the bus: we send it through that node
            self.bus.publish("kick", {"aor": binding.aor, "key": binding.key,
                                      "node": binding.node})  # fmt: skip
            return True

        def kicked(node: str, d: dict[str, Any]) -> None:
            if d.get("node") == self.node:
                binding = location.local_binding(str(d["aor"]), str(d["key"]))
                if binding is not None:
                    inbox.kicked(binding)

        inbox.kick_elsewhere = kick
        self.bus.on("kick", kicked)
        self._registered_elsewhere.append(inbox.registered_elsewhere)
        inbox.on_delivery = lambda message_id: self.bus.publish("delivered", {"id": message_id})

        self.bus.on("delivered", lambda node, d: inbox.delivered_elsewhere(int(d["id"])))

        def reload() -> None:
            spawn(inbox.load())

        self.bus.on_connected.append(reload)

    def share_coalescing(self, coalescer: Coalescer) -> None:
        """A message push per user per interval, whichever node stored the messages."""
        coalescer.on_push = lambda aor: self.bus.publish("pushed", {"aor": aor})
        self.bus.on("pushed", lambda node, d: coalescer.pushed_elsewhere(str(d["aor"])))

    async def adopt_outboxes(self, outbox: Outbox, every: float = ADOPT_EVERY) -> None:
        """Forever: pushes kept by a node that is gone (or by a node from before the
        cluster) are taken over by one live node, so every accepted push is retried."""
        while True:
            await asyncio.sleep(every)
            if not self.bus.settled():
                continue  # who is alive isn't known yet
            try:
                for node in await outbox.outbox_nodes():
                    if node != self.node and (not node or not self.bus.alive(node)):
                        await outbox.adopt(node)
            except Exception as exc:
                log_failure(log, exc, "adopting pushes of a node gone")

    def share_throttle(self, throttle: AuthThrottle) -> None:
        throttle.on_failure = lambda host: self.bus.publish("authfail", {"h": host})
        self.bus.on("authfail", lambda node, d: throttle.failed(str(d["h"]), elsewhere=True))

    def share_nonces(self, digest: DigestAuth) -> None:
        digest.on_seen = lambda nonce, ts, nc: self.bus.publish(
            "nc", {"n": nonce, "t": ts, "c": nc}
        )
        self.bus.on("nc", lambda node, d: digest.seen_elsewhere(str(d["n"]), int(d["t"]),
                                                                 int(d["c"])))  # fmt: skip
