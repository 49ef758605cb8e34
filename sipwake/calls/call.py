"""The state of one incoming call to a local user, from INVITE to answer or miss."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sipwake.sip.message import Message
from sipwake.sip.peer import Peer
from sipwake.sip.transaction import ClientTransaction, ServerTransaction
from sipwake.store.models import Binding, Device
from sipwake.timing import Handle


class CallState(StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class Outcome(StrEnum):
    """How a call ended, as the call log says it (`CallRecord.reason`)."""

    ANSWERED = "answered"
    CANCELLED = "cancelled"  # the caller hung up first: missed
    TIMEOUT = "timeout"  # the park ran out: missed
    STOPPED = "stopped"  # this node stopped while it rang: missed
    DECLINED = "declined"  # the callee said no (603, or the app's Decline)
    BUSY = "busy"  # a device answered 6xx other than 603
    FAILED = "failed"  # every branch failed and nobody was pushed

    @property
    def missed(self) -> bool:
        """Nobody answered and nobody refused: a missed call (push, call log)."""
        return self in (Outcome.CANCELLED, Outcome.TIMEOUT, Outcome.STOPPED)


# RFC 3326 Reason values on the CANCELs we send to branches
REASON_ANSWERED = 'SIP;cause=200;text="Call completed elsewhere"'
REASON_DECLINED = 'SIP;cause=603;text="Declined"'
REASON_MISSED = 'SIP;cause=487;text="Call cancelled"'


@dataclass(frozen=True, slots=True)
class Ending:
    """What an outcome means on the wire: the caller's final status (unless a branch's
    own answer is passed on) and the Reason on the CANCELs to branches still ringing."""

    status: int
    cancel_reason: str


ENDINGS = {
    Outcome.CANCELLED: Ending(487, REASON_MISSED),
    Outcome.TIMEOUT: Ending(480, REASON_MISSED),
    Outcome.STOPPED: Ending(503, REASON_MISSED),  # with Retry-After: try another node
    Outcome.DECLINED: Ending(603, REASON_DECLINED),
    Outcome.BUSY: Ending(600, REASON_DECLINED),
    Outcome.FAILED: Ending(480, REASON_MISSED),
}


@dataclass(eq=False)
class Branch:
    """The INVITE forwarded to one binding (one device, or one plain SIP phone)."""

    key: str  # device id, or the binding key for a phone without push
    peer: Peer
    tx: ClientTransaction | None = None
    status: int = 0  # final status received, 0 while pending
    binding: Binding | None = None  # the registration it was sent to (another one may follow)


@dataclass(frozen=True, slots=True)
class CallerId:
    uri: str
    number: str
    name: str


@dataclass(eq=False)
class Call:
    id: str  # park id: the `call_id` of the pushes, part of the pickup URI
    aor: str
    st: ServerTransaction  # the caller's INVITE
    caller: CallerId
    started_at: float
    deadline: float  # unix seconds: the park gives up then
    to_tag: str  # our tag on the 180 we send, and on the 200 of a pickup
    source: str = ""  # who is calling, for the push limits: the caller's AOR, or its address
    state: CallState = CallState.RINGING
    outcome: Outcome | None = None
    answered_by: str = ""
    branches: dict[str, Branch] = field(default_factory=dict)
    pushed: dict[str, Device] = field(default_factory=dict)  # device id → device
    voip_pushed: set[str] = field(default_factory=set)  # got a PushKit push (CallKit rang)
    best: Message | None = None  # best failure response so far
    parked: bool = False  # no device answers SIP yet: waiting on pushes
    push_measured: bool = False  # its INVITE→push latency is in the metrics
    relayed: bool = False  # another node's call, through us to a phone we hold: it logs
    timeout: Handle | None = None  # park timeout, or Timer C once ringing
    timers: list[Handle] = field(default_factory=list)  # alert repeats

    @property
    def invite(self) -> Message:
        return self.st.request

    @property
    def ringing(self) -> bool:
        return self.state is CallState.RINGING

    def pending_branches(self) -> list[Branch]:
        return [b for b in self.branches.values() if b.status == 0]

    def stop_timers(self) -> None:
        if self.timeout is not None:
            self.timeout.cancel()
            self.timeout = None
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
