"""Voicemail notifications: MWI in, pushes and NOTIFYs out.

    voicemail system ──NOTIFY message-summary──▶ notify_in.py ─┐
    POST /v1/voicemail (api/voicemail.py) ─────────────────────┤
                                                               ▼
                                             mailbox.py: store the state, then
                            new count rose ─▶ `voicemail` push to every enabled device
                            summary changed ─▶ subscriptions.py: NOTIFY in each dialog
                                            └▶ forward.py: NOTIFY to registered phones
                                               that did not subscribe

Devices SUBSCRIBE to their own mailbox (subscriptions.py, RFC 6665); summary.py reads
and writes the RFC 3842 body; trust.py says who may report voicemail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sipwake.router import Handler
from sipwake.sip.transaction import ServerTransaction
from sipwake.store.models import Mailbox
from sipwake.voicemail.background import Background
from sipwake.voicemail.forward import Forwarder
from sipwake.voicemail.mailbox import Change, Mailboxes, Report
from sipwake.voicemail.notify_in import NotifyIn
from sipwake.voicemail.subscriptions import Subscriptions, bad_event, parse_event
from sipwake.voicemail.summary import EVENT
from sipwake.voicemail.trust import Trust

if TYPE_CHECKING:
    from sipwake.server import Server

__all__ = ["Change", "Report", "Voicemail"]


class Voicemail:
    def __init__(self, server: Server) -> None:
        cfg = server.config
        self.tasks = Background(server.spawn)
        self.trust = Trust(
            cfg.sip.domain,
            server.trusted_peers,
            cfg.voicemail.notifiers,
            server.transport.is_us,
        )
        self.mailboxes = Mailboxes(
            server.store, server.push, self.tasks, server.registrar.devices_of
        )
        self.subscriptions = Subscriptions(
            store=server.store,
            auth=server.admission,
            uac=server.uac,
            trust=self.trust,
            mailboxes=self.mailboxes,
            tasks=self.tasks,
            min_expires=cfg.sip.min_expires,
            max_expires=cfg.sip.max_expires,
        )
        self.forwarder = Forwarder(server.registrar, server.uac, self.subscriptions, self.tasks)
        self.notify_in = NotifyIn(server.store, server.admission, self.trust, self.mailboxes)
        self.mailboxes.on_change = self._changed
        self.server = server

    def install(self) -> None:
        """Take NOTIFY and SUBSCRIBE for the message-summary package; other event
        packages go to whoever had the method before (489 when nobody did)."""
        router = self.server.router
        for method, handler in (("NOTIFY", self.notify_in.on_notify),
                                ("SUBSCRIBE", self.subscriptions.on_subscribe)):
            router.route(method, _by_event(handler, router.handlers.get(method)))
        self.subscriptions.start(self.server.spawn)

    async def report(self, aor: str, report: Report) -> Change:
        """A voicemail system's report on one mailbox (the webhook's entry point)."""
        return await self.mailboxes.report(aor, report)

    def _changed(self, mailbox: Mailbox) -> None:
        self.subscriptions.publish(mailbox)
        self.forwarder.publish(mailbox)

    async def settled(self) -> None:
        """Wait for the pushes and NOTIFYs started so far to finish."""
        await self.tasks.settled()


def _by_event(
    mine: Callable[[ServerTransaction], Awaitable[None]], other: Handler | None
) -> Handler:
    def handle(st: ServerTransaction) -> Awaitable[None] | None:
        package, _ = parse_event(st.request.get("Event"))
        if package == EVENT:
            return mine(st)
        if other is not None:
            return other(st)
        st.respond(bad_event(st.request))
        return None

    return handle
