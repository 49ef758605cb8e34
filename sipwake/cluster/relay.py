"""The owning node's side of an internal route: a request another node sent through
us to a phone whose connection we hold goes down that connection.

An INVITE becomes a call of ours with that one binding as its only branch (the calls
service: Record-Route, CANCEL, the dialog that carries ACK and BYE); anything else
(MESSAGE, NOTIFY, OPTIONS) is one transaction whose answers go back as they come.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from sipwake.cluster.node import PICKUP
from sipwake.cluster.routes import InternalRoutes
from sipwake.registrar.registrar import forwarded
from sipwake.sip.message import Message
from sipwake.sip.transaction import ServerTransaction
from sipwake.sip.uac import Uac
from sipwake.store.models import Binding


class LocalBindings(Protocol):
    def local_binding(self, aor: str, key: str) -> Binding | None: ...


class RelayedCalls(Protocol):
    def on_relayed(self, st: ServerTransaction, binding: Binding) -> None: ...

    async def on_relayed_pickup(self, st: ServerTransaction, aor: str) -> None: ...


class Relay:
    def __init__(
        self,
        routes: InternalRoutes,
        bindings: LocalBindings,
        calls: RelayedCalls,
        uac: Uac,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self.spawn = spawn
        self.routes = routes
        self.bindings = bindings
        self.calls = calls
        self.uac = uac

    def claim(self, st: ServerTransaction) -> bool:
        """Take the request if it came through a signed internal route."""
        req = st.request
        target = self.routes.accept(req)
        if target is None:
            return False
        aor, key = target
        if key == PICKUP and req.method == "INVITE":  # a call parked here, picked up there
            self.spawn(self.calls.on_relayed_pickup(st, aor))
            return True
        binding = self.bindings.local_binding(aor, key)
        if binding is None:
            # the phone left (connection closed, unregistered) since the other node
            # looked: that node's branch fails and it carries on with the others
            st.reply(430)  # Flow Failed (RFC 5626): the other node wakes it instead
            return True
        if req.method == "INVITE":
            self.calls.on_relayed(st, binding)
        else:
            self._forward(st, binding)
        return True

    def _forward(self, st: ServerTransaction, binding: Binding) -> None:
        msg, peer = forwarded(st.request, binding)

        def on_response(resp: Message) -> None:
            if resp.status == 100:
                return
            resp.pop_first("Via")
            st.respond(resp)

        self.uac.start(msg, peer, on_response)
