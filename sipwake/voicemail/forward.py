"""Registered phones that did not subscribe still hear of a change: an unsolicited
(out-of-dialog) message-summary NOTIFY to each live binding of the user, as
Asterisk and most voicemail systems send it (`Subscription-State: terminated`, no
dialog). Push parameters never leave: the binding is reached through `reach()`."""

from __future__ import annotations

import logging
from typing import Protocol

from sipwake.registrar.registrar import reach
from sipwake.sip.uac import Uac
from sipwake.store.models import Binding, Mailbox
from sipwake.tasks import Tasks
from sipwake.voicemail.mailbox import summary_body
from sipwake.voicemail.subscriptions import Subscriptions
from sipwake.voicemail.summary import CONTENT_TYPE, EVENT

log = logging.getLogger("sipwake.voicemail")


class LiveBindings(Protocol):
    def live_bindings(self, aor: str) -> list[Binding]: ...


class Forwarder:
    def __init__(
        self, registrar: LiveBindings, uac: Uac, subscriptions: Subscriptions, tasks: Tasks
    ) -> None:
        self.registrar = registrar
        self.uac = uac
        self.subscriptions = subscriptions
        self.tasks = tasks

    def publish(self, mailbox: Mailbox) -> None:
        body = summary_body(mailbox)
        for binding in self.registrar.live_bindings(mailbox.aor):
            if not self.subscriptions.covers(binding):
                self.tasks.spawn(self._notify(binding, body), f"MWI NOTIFY to {binding.aor}")

    async def _notify(self, binding: Binding, body: bytes) -> None:
        target = reach(binding)
        host, port = self.uac.local_address(target.peer.transport)
        host = f"[{host}]" if ":" in host else host
        aor = binding.aor
        msg = self.uac.new_request(
            "NOTIFY", target.request_uri, f"<{aor}>", f"<{aor}>", body=body,
            headers=[("Event", EVENT), ("Subscription-State", "terminated"),
                     ("Content-Type", CONTENT_TYPE),
                     ("Contact", f"<sip:{host}:{port};transport={target.peer.transport}>")],
        )  # fmt: skip
        for route in target.route:
            msg.add("Route", route)
        resp = await self.uac.send(msg, target.peer)
        log.info("MWI NOTIFY to %s (%s): %d", aor, target.peer, resp.status)
