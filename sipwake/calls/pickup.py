"""Explicit pickup, the mechanics: a bridge of two dialogs.

The woken app INVITEs the pickup URI without an offer. It gets the caller's offer in
our 200; its answer comes in its ACK and goes to the caller in our 200 to the parked
INVITE. From then on the two dialogs are bridged (dialogs.py): we are the UA on both
legs and re-issue each side's in-dialog requests on the other. Bodies pass untouched,
so ICE stays end to end. Which call, and whether this device may take it, is the call
service's decision; this module only carries it out.
"""

from __future__ import annotations

import asyncio

from sipwake.calls.call import Call
from sipwake.calls.dialogs import Bridge, Dialogs, Leg
from sipwake.sip.message import Message, make_response
from sipwake.sip.transaction import ServerTransaction, new_tag
from sipwake.timing import Scheduler, timeout


class Pickups:
    def __init__(self, dialogs: Dialogs, scheduler: Scheduler, ack_wait: float) -> None:
        self.dialogs = dialogs
        self.scheduler = scheduler
        self.ack_wait = ack_wait  # seconds our 200 waits for its ACK (64*T1)
        self.pending: dict[str, asyncio.Future[Message]] = {}  # device's call-id → its ACK

    def __len__(self) -> int:
        return len(self.pending)

    async def bridge(self, st: ServerTransaction, call: Call) -> None:
        """Answer the device's pickup INVITE `st` with `call`'s offer; on its ACK, answer
        the caller with the device's answer and bridge the two dialogs."""
        req = st.request
        device_tag = new_tag()
        ok = make_response(req, 200, to_tag=device_tag)
        ok.add("Contact", self.dialogs.contact(req.source))
        content_type = call.invite.get("Content-Type")
        if content_type:
            ok.add("Content-Type", content_type)
        ok.body = call.invite.body
        ack_future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.pending[req.call_id] = ack_future
        st.respond(ok)

        invite = call.invite
        caller_leg = Leg(
            call_id=invite.call_id,
            local_uri=f"{invite.get('To')};tag={call.to_tag}",
            remote_uri=invite.get("From") or "",
            remote_target=str(invite.contacts[0].uri) if invite.contacts else invite.uri,
            peer=invite.source,
        )
        device_leg = Leg(
            call_id=req.call_id,
            local_uri=f"{req.get('To')};tag={device_tag}",
            remote_uri=req.get("From") or "",
            remote_target=str(req.contacts[0].uri) if req.contacts else str(req.source),
            peer=req.source,
        )
        ack: Message | None = None
        try:
            async with timeout(self.scheduler, self.ack_wait):
                ack = await ack_future
        except TimeoutError:
            pass
        finally:
            self.pending.pop(req.call_id, None)
        last = call.st.last_response
        if last is not None and last.status >= 200:
            self.dialogs.bye(device_leg)  # the caller hung up meanwhile
            return
        if ack is None or not ack.body:
            if ack is not None:
                self.dialogs.bye(device_leg)
            call.st.respond(make_response(invite, 480, to_tag=call.to_tag))
            return
        answer = make_response(invite, 200, to_tag=call.to_tag)
        answer.add("Contact", self.dialogs.contact(invite.source))
        answer.add("Content-Type", ack.get("Content-Type") or "application/sdp")
        answer.body = ack.body
        self.dialogs.add_bridge(Bridge(caller_leg, device_leg))
        call.st.respond(answer)

    def on_ack(self, ack: Message) -> bool:
        """The device's ACK to our 200, carrying its answer: taken here."""
        waiting = self.pending.get(ack.call_id)
        if waiting is None or waiting.done():
            return False
        waiting.set_result(ack)
        return True
