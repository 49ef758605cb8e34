"""The state of one incoming call to a local user, from INVITE to answer or miss."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(eq=False, init=False)
class Branch:
    """The INVITE forwarded to one binding (one device, or one plain SIP phone)."""

    key: str  # device id, or the binding key for a phone without push
    peer: Peer
    tx: ClientTransaction | None
    status: int  # final status received, 0 while pending
    binding: Binding | None  # the registration it was sent to (another one may follow)

    def __init__(self, key: str, peer: Peer, binding: Binding | None = None) -> None:
        # written out, not generated: see speedups.py on dataclasses
        self.key = key
        self.peer = peer
        self.tx = None
        self.status = 0
        self.binding = binding


@dataclass(frozen=True, slots=True, init=False)
class CallerId:
    uri: str
    number: str
    name: str

    def __init__(self, uri: str, number: str, name: str) -> None:
        # written out, not generated: see speedups.py on dataclasses
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "number", number)
        object.__setattr__(self, "name", name)


@dataclass(eq=False, init=False)
class Call:
    id: str  # park id: the `call_id` of the pushes, part of the pickup URI
    aor: str
    st: ServerTransaction  # the caller's INVITE
    caller: CallerId
    started_at: float
    deadline: float  # unix seconds: the park gives up then
    to_tag: str  # our tag on the 180 we send, and on the 200 of a pickup
    source: str  # who is calling, for the push limits: the caller's AOR, or its address
    state: CallState
    outcome: Outcome | None
    answered_by: str
    branches: dict[str, Branch]
    pushed: dict[str, Device]  # device id → device
    voip_pushed: set[str]  # got a PushKit push (CallKit rang)
    best: Message | None  # best failure response so far
    parked: bool  # no device answers SIP yet: waiting on pushes
    push_measured: bool  # its INVITE→push latency is in the metrics
    relayed: bool  # another node's call, through us to a phone we hold: it logs
    timeout: Handle | None  # park timeout, or Timer C once ringing
    timers: list[Handle]  # alert repeats

    def __init__(
        self,
        id: str,
        aor: str,
        st: ServerTransaction,
        caller: CallerId,
        started_at: float,
        deadline: float,
        to_tag: str,
        source: str = "",
        relayed: bool = False,
    ) -> None:  # written out, not generated: see speedups.py on dataclasses
        self.id = id
        self.aor = aor
        self.st = st
        self.caller = caller
        self.started_at = started_at
        self.deadline = deadline
        self.to_tag = to_tag
        self.source = source
        self.state = CallState.RINGING
        self.outcome = None
        self.answered_by = ""
        self.branches = {}
        self.pushed = {}
        self.voip_pushed = set()
        self.best = None
        self.parked = False
        self.push_measured = False
        self.relayed = relayed
        self.timeout = None
        self.timers = []

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
