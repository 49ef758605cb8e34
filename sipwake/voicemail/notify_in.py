"""MWI in: a voicemail system's message-summary NOTIFY (RFC 3842) to a user's AOR.

    Request-URI not our domain     → 404
    untrusted source               → 403, or 407/403 by digest when notifiers are set
    unknown user                   → 404
    Content-Type not a summary     → 415 (Accept)
    malformed summary              → 400 with the reason
    otherwise                      → state stored, then 200

Nothing from a refused NOTIFY is stored.
"""

from __future__ import annotations

import logging

from sipwake.auth import Admission
from sipwake.auth.users import Users
from sipwake.sip.message import Message, make_response
from sipwake.sip.transaction import ServerTransaction, new_tag
from sipwake.voicemail import summary
from sipwake.voicemail.mailbox import Mailboxes, Report
from sipwake.voicemail.subscriptions import media_type
from sipwake.voicemail.trust import Trust

log = logging.getLogger("sipwake.voicemail")


class NotifyIn:
    def __init__(
        self,
        users: Users,
        auth: Admission,
        trust: Trust,
        mailboxes: Mailboxes,
    ) -> None:
        self.users = users
        self.auth = auth
        self.trust = trust
        self.mailboxes = mailboxes

    async def on_notify(self, st: ServerTransaction) -> None:
        """A NOTIFY with `Event: message-summary`."""
        request = st.request
        user = self.trust.local_user(request.request_uri)
        if user is None:
            st.respond(make_response(request, 404, "Not Found (not our domain)"))
            return
        refusal = await self._refusal(request)
        if refusal is not None:
            st.respond(refusal)
            return
        if await self.users.get(user, self.trust.domain) is None:
            st.respond(make_response(request, 404, "Not Found (no such user)"))
            return
        content_type = media_type(request.get("Content-Type"))
        if content_type and content_type != summary.CONTENT_TYPE:
            resp = make_response(request, 415)
            resp.add("Accept", summary.CONTENT_TYPE)
            st.respond(resp)
            return
        try:
            parsed = summary.parse(request.body)
        except summary.SummaryError as exc:
            log.warning("bad message-summary for %s from %s: %s", user, request.source, exc)
            detail = str(exc).replace("\r", " ").replace("\n", " ")[:80]
            st.respond(make_response(request, 400, f"Bad Request ({detail})"))
            return
        report = Report(
            waiting=parsed.waiting,
            account=parsed.account,
            voice=parsed.voice,
            caller=summary.caller(parsed),
            source=f"sip {request.source}",
        )
        await self.mailboxes.report(f"sip:{user}@{self.trust.domain}", report)
        st.respond(make_response(request, 200, to_tag=new_tag()))

    async def _refusal(self, request: Message) -> Message | None:
        """None when the sender may report voicemail, else the response refusing it."""
        if self.trust.trusted(request.source):
            return None
        if not self.trust.notifiers:
            log.warning("message-summary NOTIFY from untrusted %s refused", request.source)
            return make_response(request, 403, "Forbidden (untrusted voicemail source)")
        caller = await self.auth.admit(request)
        if isinstance(caller, Message):
            return caller  # 407 challenge, or 403
        if caller.user is None or not self.trust.is_notifier(caller.user.username):
            who = caller.user.username if caller.user else request.source
            log.warning("message-summary NOTIFY from %s: not a notifier", who)
            return make_response(request, 403, "Forbidden (not a voicemail notifier)")
        return None
