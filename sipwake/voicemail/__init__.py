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
from typing import Protocol

from sipwake.auth import Admission
from sipwake.auth.users import Users
from sipwake.config import SipConfig, VoicemailConfig
from sipwake.push.facade import Broadcaster
from sipwake.router import Handler
from sipwake.sip.peer import TrustedPeers
from sipwake.sip.transaction import ServerTransaction
from sipwake.sip.uac import Uac
from sipwake.store.models import Binding, Device, Mailbox
from sipwake.tasks import Tasks
from sipwake.voicemail.forward import Forwarder
from sipwake.voicemail.mailbox import Change, Mailboxes, MailboxStore, Report
from sipwake.voicemail.notify_in import NotifyIn
from sipwake.voicemail.subscriptions import Subscriptions, bad_event, parse_event
from sipwake.voicemail.summary import EVENT
from sipwake.voicemail.trust import Trust

__all__ = ["Change", "Report", "Voicemail"]


class Locations(Protocol):
    def live_bindings(self, aor: str) -> list[Binding]: ...

    async def devices_of(self, aor: str) -> list[Device]: ...


class Routes(Protocol):
    """The router: which handler takes a method."""

    handlers: dict[str, Handler]

    def route(self, method: str, handler: Handler) -> None: ...


class Voicemail:
    def __init__(
        self,
        settings: VoicemailConfig,
        sip: SipConfig,
        *,
        store: MailboxStore,
        users: Users,
        locations: Locations,
        gate: Admission,
        trusted: TrustedPeers,
        is_us: Callable[[str, int | None, bool], bool],
        uac: Uac,
        pusher: Broadcaster,
        tasks: Tasks,
    ) -> None:
        self.tasks = tasks
        self.trust = Trust(sip.domain, trusted, settings.notifiers, is_us)
        self.mailboxes = Mailboxes(store, pusher, tasks, locations.devices_of)
        self.subscriptions = Subscriptions(
            users=users,
            auth=gate,
            uac=uac,
            trust=self.trust,
            mailboxes=self.mailboxes,
            tasks=tasks,
            min_expires=sip.min_expires,
            max_expires=sip.max_expires,
        )
        self.forwarder = Forwarder(locations, uac, self.subscriptions, tasks)
        self.notify_in = NotifyIn(users, gate, self.trust, self.mailboxes)
        self.mailboxes.on_change = self._changed

    def install(self, router: Routes) -> None:
        """Take NOTIFY and SUBSCRIBE for the message-summary package; other event
        packages go to whoever had the method before (489 when nobody did). The
        subscriptions' expiry (`expire_forever`) is the caller's to run."""
        for method, handler in (("NOTIFY", self.notify_in.on_notify),
                                ("SUBSCRIBE", self.subscriptions.on_subscribe)):
            router.route(method, _by_event(handler, router.handlers.get(method)))

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
