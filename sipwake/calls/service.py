"""Calls to local users, top to bottom: the policy.

INVITE to a user → forked to every live binding (stateful proxy, Record-Route); every
push device of the user without a live binding gets a `call` push. With no live
binding at all the call is *parked*: the caller hears 180 Ringing while the pushes
wake the app. The woken app either registers — the parked INVITE is then forwarded
to its new binding (RFC 8599 fork-late) — or sends an INVITE to the push's
`pickup_uri` and gets the caller's offer in our 200 (pickup.py). The first answer
wins; other branches are cancelled and pushed devices told `call_cancelled`. A CANCEL
from the caller or the park timeout ends the call as missed: `missed_call` push and
call log. Bodies are never touched: ICE stays end to end.

The proxy mechanics are sip/proxy.py's, the bridge of a pickup pickup.py's, the
established dialogs dialogs.py's; what this service depends on is named by the small
protocols below, and server.py wires them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from sipwake.auth import Caller
from sipwake.calls.call import (
    ENDINGS,
    REASON_ANSWERED,
    REASON_DECLINED,
    REASON_MISSED,
    Branch,
    Call,
    CallerId,
    CallState,
    Outcome,
)
from sipwake.calls.dialogs import Dialogs, ProxyDialog, scrub_contacts
from sipwake.calls.pickup import Pickups
from sipwake.config import CallsConfig
from sipwake.ids import random_urlsafe
from sipwake.lograte import LogRate
from sipwake.push.facade import Pusher
from sipwake.push.notification import (
    CallCancelledNotification,
    CallNotification,
    MissedCallNotification,
    Notification,
)
from sipwake.ratelimit import RateLimiter
from sipwake.registrar.registrar import forwarded
from sipwake.sip import proxy
from sipwake.sip.errors import SipParseError
from sipwake.sip.message import Message, make_response
from sipwake.sip.peer import Peer
from sipwake.sip.transaction import ServerTransaction, new_tag
from sipwake.sip.uac import Uac
from sipwake.sip.uri import URI, NameAddr
from sipwake.store.models import Binding, CallRecord, Device, User
from sipwake.timeline import NO_TRACE, Trace
from sipwake.timing import Scheduler, sleep

log = logging.getLogger("sipwake.calls")

PICKUP_PREFIX = "pickup-"
DIALOG_MAX_AGE = 12 * 3600  # a call longer than this without BYE is a lost BYE
DIALOG_SWEEP = 300.0
TIMER_C = 180.0  # RFC 3261 §16.6: a ringing branch may ring this long (> 3 min)
IN_DIALOG_METHODS = ("BYE", "UPDATE", "INFO", "PRACK", "REFER")
QUICK_CANCEL = 5.0  # seconds: a CANCEL this soon after a pushing INVITE costs another push
RETRY_AFTER = "5"  # seconds, on the 503s we answer ourselves
# what a late iPhone is told when its CallKit call is cancelled
_LATE_REASONS = {Outcome.ANSWERED: REASON_ANSWERED, Outcome.DECLINED: REASON_DECLINED}


# ------------------------------------------------------------- what it uses
class Locations(Protocol):
    """The registrar, as calls see it."""

    def live_bindings(self, aor: str) -> list[Binding]: ...

    async def devices_of(self, aor: str) -> list[Device]: ...


class Parks(Protocol):
    """The cluster: where a call parked on another node is (its park id says)."""

    park_prefix: str  # this node's: the first characters of the park ids it makes

    def parked_elsewhere(self, park_id: str, aor: str, request_uri: str) -> Binding | None:
        ...


class Users(Protocol):
    async def get(self, username: str, domain: str) -> User | None: ...


class Gate(Protocol):
    """Admission (sipwake.auth): who may call, and who a pickup is."""

    def is_local(self, uri: URI) -> bool: ...

    async def admit(self, request: Message) -> Caller | Message: ...

    async def authenticate(self, request: Message, proxy: bool = False) -> User | Message: ...


class Wire(Protocol):
    """The transport, for what goes out without a transaction of ours."""

    def send(self, msg: Message, peer: Peer) -> bool: ...

    def is_us(self, host: str, port: int | None, secure: bool = False) -> bool: ...


# a branch's final status that says its flow was gone, not the device's answer
_FLOW_GONE = frozenset({430, 408, 503})


class CallLog(Protocol):
    """Where ended calls are recorded (calls/log.py writes them behind, batched)."""

    def put(self, record: CallRecord) -> None: ...

    async def flush(self) -> None: ...


class Observer(Protocol):
    def observe(self, seconds: float, /) -> None: ...


class CallMetrics(Protocol):
    @property
    def call_push(self) -> Observer: ...  # INVITE in → first call push sent

    @property
    def call_push_accepted(self) -> Observer: ...  # INVITE in → a provider accepted it

    @property
    def register_invite(self) -> Observer: ...  # REGISTER in → the INVITE to the new binding


Spawn = Callable[[Coroutine[Any, Any, Any]], object]


class CallService:
    def __init__(
        self,
        settings: CallsConfig,
        domain: str,
        *,
        locations: Locations,
        users: Users,
        gate: Gate,
        uac: Uac,
        wire: Wire,
        pusher: Pusher,
        call_log: CallLog,
        metrics: CallMetrics,
        spawn: Spawn,
        scheduler: Scheduler,
        start: Spawn | None = None,
        ack_wait: float,
        clock: Callable[[], float] = time.time,
        parks: Parks | None = None,
        trace: Trace = NO_TRACE,
    ) -> None:
        self.settings = settings
        self.trace = trace  # each call's story, for the operator (sipwake/timeline.py)
        self.domain = domain
        self.locations = locations
        self.users = users
        self.gate = gate
        self.uac = uac
        self.wire = wire
        self.pusher = pusher
        self.call_log = call_log
        self.metrics = metrics
        self.spawn = spawn
        # pushes: their first steps at once, up to the request on the wire (Tasks.start)
        self.start = start or spawn
        self.scheduler = scheduler
        self.clock = clock  # wall time: push deadlines, the call log
        self.parks = parks  # None: a node alone
        # calls that push, per minute: from one source to one user, and to one user
        self.source_pushes = RateLimiter(
            settings.source_rate / 60, settings.source_burst, scheduler.time
        )
        self.callee_pushes = RateLimiter(
            settings.callee_rate / 60, settings.callee_burst, scheduler.time
        )
        self._limited = LogRate(60.0, scheduler.time)
        self.calls: dict[str, Call] = {}  # park id → ringing call
        self.by_st: dict[ServerTransaction, Call] = {}
        self.ended: dict[str, Call] = {}  # park id → call over, kept for late devices
        # indexes, so a REGISTER or an INVITE never scans every call
        self.ringing_by_aor: dict[str, dict[str, Call]] = {}  # aor → park id → call
        self.late_by_device: dict[str, dict[str, Call]] = {}  # VoIP-pushed, not reached
        self.dialogs = Dialogs(uac, scheduler.time)
        self.pickups = Pickups(self.dialogs, scheduler, ack_wait)

    async def sweep_dialogs(self) -> None:
        """Forever: forget dialogs whose BYE never came."""
        while True:
            await sleep(self.scheduler, DIALOG_SWEEP)
            gone = self.dialogs.sweep(DIALOG_MAX_AGE)
            if gone:
                log.info("forgot %d dialogs older than %d s", gone, DIALOG_MAX_AGE)

    def counts(self) -> dict[str, int]:
        return {
            "ringing": len(self.calls),
            "parked": sum(1 for call in self.calls.values() if call.parked),
            "ended": len(self.ended),
            "dialogs": len(self.dialogs),
            "pickups": len(self.pickups),
            "indexed": len(self.ringing_by_aor) + len(self.late_by_device),
        }

    def ringing(self, limit: int) -> list[dict[str, str | int | float | bool]]:
        """Calls parked or ringing now, oldest first (the admin page), at most `limit`."""
        out: list[dict[str, str | int | float | bool]] = []
        for call in list(self.calls.values())[:limit]:
            out.append({
                "call_id": call.id, "callee": call.aor, "caller": call.caller.uri,
                "caller_name": call.caller.name, "parked": call.parked,
                "started_at": call.started_at, "deadline": call.deadline,
                "pushed": len(call.pushed), "branches": len(call.branches),
            })  # fmt: skip
        return out

    # ------------------------------------------------------------------ INVITE
    async def on_invite(self, st: ServerTransaction) -> None:
        req = st.request
        proxy.pop_own_routes(req, self.wire.is_us)
        if req.to_tag:
            self.dialogs.request(st)  # re-INVITE (e.g. an ICE restart)
            return
        if proxy.looped(req, self.wire.is_us):
            st.reply(482)
            return
        ruri = req.request_uri
        if not self.gate.is_local(ruri):
            st.reply(404, "Not Found (not our domain)")
            return
        caller = await self.gate.admit(req)
        if isinstance(caller, Message):
            st.respond(caller)  # 407, or 403: a stranger, or From is not who authenticated
            return
        if not caller.trusted:
            # believed from trusted peers only: a local caller is who authenticated
            req.remove("P-Asserted-Identity")
            req.remove("P-Preferred-Identity")
        if ruri.user.startswith(PICKUP_PREFIX):
            # pickup-<park id>.<device id>: each pushed device has a pickup URI of its own
            park_id, _, device_id = ruri.user[len(PICKUP_PREFIX) :].partition(".")
            await self._pickup(st, park_id, device_id, caller.user)
            return
        if await self.users.get(ruri.user, self.domain) is None:
            st.reply(404)
            return
        aor = f"sip:{ruri.user}@{self.domain}"
        if len(self.calls) >= self.settings.max_parked_total:
            st.respond(_retry_later(req, 503))
            return
        if len(self.ringing_by_aor.get(aor, ())) >= self.settings.max_parked_per_user:
            st.reply(486)
            return

        live = self.locations.live_bindings(aor)
        reached = {b.device_id for b in live if b.device_id}
        sleeping = [
            d for d in await self.locations.devices_of(aor)
            if d.enabled and d.device_id not in reached
        ]  # fmt: skip
        if not live and not sleeping:
            st.reply(480)
            return
        source = caller.user.aor if caller.user is not None else _address(req)
        if sleeping and not self._may_push(source, aor):
            sleeping = []  # live phones still ring; nobody is woken
            if not live:
                resp = make_response(req, 480, "Temporarily Unavailable (too many calls)",
                                     to_tag=new_tag())  # fmt: skip
                resp.add("Retry-After", "60")
                st.respond(resp)
                return
        if st.last_response is not None and st.last_response.status >= 200:
            return  # the caller gave up (CANCEL) while we looked things up
        self._ring(st, aor, _caller_id(req, caller.user), source, live, sleeping)

    def on_relayed(self, st: ServerTransaction, binding: Binding) -> None:
        """Another node's call (cluster), to a phone whose connection we hold: the node
        that took it decided who may call and pushed the sleeping devices; we are one
        branch of its fork, with Record-Route so the dialog passes through us."""
        self._ring(st, binding.aor, _caller_id(st.request, None), "", [binding], [],
                   relayed=True)  # fmt: skip

    async def on_relayed_pickup(self, st: ServerTransaction, aor: str) -> None:
        """A pickup another node took for a call parked here: that node checked who
        is picking up (digest) and vouches for it with the signed route."""
        ruri = st.request.request_uri
        username = aor.removeprefix("sip:").partition("@")[0]
        user = await self.users.get(username, self.domain)
        if user is None or not ruri.user.startswith(PICKUP_PREFIX):
            st.reply(404)
            return
        park_id, _, device_id = ruri.user[len(PICKUP_PREFIX) :].partition(".")
        await self._pickup(st, park_id, device_id, user)

    def _ring(
        self,
        st: ServerTransaction,
        aor: str,
        caller: CallerId,
        source: str,
        live: list[Binding],
        sleeping: list[Device],
        relayed: bool = False,
    ) -> None:
        """The call begins: forked to the live bindings, pushed to the sleeping devices,
        parked (180 at once) when nobody is live."""
        req = st.request
        now = self.clock()
        call = Call(
            id=(self.parks.park_prefix if self.parks else "") + random_urlsafe(12),
            aor=aor,
            st=st,
            caller=caller,
            started_at=now,
            deadline=now + self.settings.park_timeout,
            to_tag=new_tag(),
            source=source,
            relayed=relayed,
        )
        self.calls[call.id] = call
        if not relayed:  # fork-late is the other node's: it hears of registrations too
            self.ringing_by_aor.setdefault(aor, {})[call.id] = call
        self.by_st[st] = call
        # parked: the park timeout; ringing live phones: the proxy's Timer C
        call.parked = not live
        self._arm(call, self.settings.park_timeout if call.parked else TIMER_C)
        self.trace.record("call", call.id, "invite in", caller=caller.uri, callee=aor,
                          sip_call_id=req.call_id, live=len(live), sleeping=len(sleeping))
        if not live:
            st.respond(make_response(req, 180, to_tag=call.to_tag))  # parked: ringback
            self.trace.record("call", call.id, "parked", state="parked",
                              timeout=self.settings.park_timeout)
        for binding in live:
            self._fork(call, binding)
        if sleeping:
            self._push_call(call, sleeping)
        log.info("call %s to %s: %d live, %d pushed", call.id, aor, len(live), len(sleeping))

    # ----------------------------------------------------------------- forking
    def _fork(self, call: Call, binding: Binding) -> bool:
        """Forward the INVITE to one binding, once per device (or phone) per call."""
        key = binding.device_id or binding.key
        old = call.branches.get(key)
        if old is not None and old.status not in _FLOW_GONE:
            return False
        # a branch whose flow was gone (430, or no answer at all) is tried again on the
        # device's new registration: it may have come in before that branch failed
        msg, peer = self._to_binding(call, binding)
        branch = Branch(key, peer, binding=binding)
        call.branches[key] = branch
        branch.tx = self.uac.start(
            msg, peer, lambda resp: self._on_branch_response(call, branch, resp)
        )
        self.trace.record("call", call.id, "invite out", device=key, to=str(peer))
        return True

    def _to_binding(self, call: Call, binding: Binding) -> tuple[Message, Peer]:
        """The caller's INVITE as forwarded to one binding (RFC 3261 §16.6)."""
        msg, peer = forwarded(call.invite, binding)
        proxy.record_route(msg, call.invite.source, peer, self.uac.local_address)
        return msg, peer

    def _on_branch_response(self, call: Call, branch: Branch, resp: Message) -> None:
        resp.pop_first("Via")
        scrub_contacts(resp)
        status = resp.status
        if status > 100:
            self.trace.record("call", call.id, str(status), device=branch.key,
                              reason=resp.reason)
        if status < 200:
            if status > 100 and call.ringing:
                if call.parked:
                    call.parked = False  # a woken device rings: no longer parked
                    self._arm(call, TIMER_C)
                call.st.respond(resp)
            return
        branch.status = status
        if status < 300:
            if call.ringing:
                self._answer(call, branch, resp)
            else:
                # a second answer: pass it on so the caller can hang it up (RFC 3261 §16.7)
                self.wire.send(resp, call.invite.source)
            return
        if not call.ringing:
            return
        if status >= 600:
            self._end(call, Outcome.DECLINED if status == 603 else Outcome.BUSY, resp)
            return
        if status == 430:  # a flow failure is ours to handle, not the caller's answer
            if any(
                (b.device_id or b.key) == branch.key and b is not branch.binding
                and self._fork(call, b)
                for b in self.locations.live_bindings(call.aor)
            ):  # fmt: skip
                return  # its flow was gone, but the device has registered again meanwhile
            if branch.key not in call.pushed:
                # RFC 5626 Flow Failed: the phone left another node's connection since we
                # looked (cluster): it is asleep after all, so wake it
                self.spawn(self._wake_instead(call, branch.key))
                return
        elif call.best is None or proxy.better(resp, call.best):
            call.best = resp
        if not call.pending_branches() and not call.pushed:
            # nobody left who could still answer and nobody to wait for: fail now
            self._end(call, Outcome.FAILED, call.best)

    async def _wake_instead(self, call: Call, device_id: str) -> None:
        """A branch's flow failed: push its device (and park the call if nobody else
        rings), or, with no device to wake, fail the call when nobody is left."""
        devices = await self.locations.devices_of(call.aor)
        device = next((d for d in devices if d.device_id == device_id and d.enabled), None)
        if not call.ringing:
            return
        # the call's first push pays the push limits the INVITE did not (it found
        # nobody asleep then); over them, there is nobody to wake
        first = not (call.pushed or call.relayed)
        if device is not None and first and not self._may_push(call.source, call.aor):
            device = None
        if device is None or device_id in call.pushed:
            if not call.pending_branches() and not call.pushed:
                self._end(call, Outcome.FAILED, call.best)
            return
        if not call.pending_branches() and not call.parked:
            call.parked = True  # nobody rings now: the caller waits for the push
            last = call.st.last_response
            if last is None or last.status < 180:
                call.st.respond(make_response(call.invite, 180, to_tag=call.to_tag))
            self._arm(call, self.settings.park_timeout)
        self._push_call(call, [device])

    def _answer(self, call: Call, branch: Branch, resp: Message) -> None:
        invite = call.invite
        self.dialogs.add_proxy(
            ProxyDialog(invite.call_id, invite.from_tag, resp.to_tag,
                        invite.source, branch.peer)
        )  # fmt: skip
        call.st.respond(resp)
        self._settle_answered(call, branch.key)

    def _settle_answered(self, call: Call, answered_by: str) -> None:
        """First answer wins: stop the rest, tell pushed devices, log it."""
        call.state = CallState.ANSWERED
        call.answered_by = answered_by
        call.outcome = Outcome.ANSWERED
        self.trace.record("call", call.id, "answered", by=answered_by, state="answered")
        self._finish(call)
        for key, other in call.branches.items():
            if key != answered_by and other.status == 0 and other.tx is not None:
                other.tx.cancel(REASON_ANSWERED)
        stop = CallCancelledNotification(call_id=call.id, reason="answered_elsewhere")
        self._push([d for d_id, d in call.pushed.items() if d_id != answered_by], stop)

    # ------------------------------------------------------- ending a call
    def _end(
        self, call: Call, outcome: Outcome, resp: Message | None = None, reason: str = ""
    ) -> None:
        """No one answered: cancel the branches, give the caller its final answer (a
        branch's own `resp`, or the outcome's status), log, tell the pushed devices."""
        ending = ENDINGS[outcome]
        call.state = CallState.ENDED
        call.outcome = outcome
        self.trace.record("call", call.id, "end", outcome=str(outcome), missed=outcome.missed,
                          state=str(outcome))
        self._finish(call)
        for branch in call.pending_branches():
            if branch.tx is not None:
                branch.tx.cancel(reason or ending.cancel_reason)
        last = call.st.last_response
        if last is None or last.status < 200:
            if resp is not None:
                final = resp
            else:
                final = make_response(call.invite, ending.status, to_tag=call.to_tag)
                if ending.status == 503:
                    final.add("Retry-After", RETRY_AFTER)
            call.st.respond(final)
        devices = list(call.pushed.values())
        if outcome is Outcome.DECLINED:
            self._push(devices, CallCancelledNotification(call_id=call.id, reason="declined"))
        if outcome.missed:
            self._push(
                devices,
                MissedCallNotification(
                    call_id=call.id,
                    caller_uri=call.caller.uri,
                    caller_number=call.caller.number,
                    caller_name=call.caller.name,
                    at=int(call.started_at),
                ),
            )
        log.info("call %s to %s ended: %s", call.id, call.aor, outcome)

    def _finish(self, call: Call) -> None:
        """Common to every end of ringing: timers off, out of the ringing tables, logged,
        remembered a little longer for devices that register late."""
        call.stop_timers()
        self.calls.pop(call.id, None)
        _unindex(self.ringing_by_aor, call.aor, call.id)
        self.by_st.pop(call.st, None)
        if call.pushed:  # its park id is out there, in pushes: remember it a while
            self.ended[call.id] = call
            # an iOS device CallKit rang, that neither got the INVITE (a branch whose flow
            # was gone did not reach it) nor picked up
            reached = {key for key, b in call.branches.items() if b.status not in _FLOW_GONE}
            for device_id in call.voip_pushed - reached - {call.answered_by}:
                self.late_by_device.setdefault(device_id, {})[call.id] = call
            # a device woken by the push registers within a park timeout of it
            keep = max(0.0, call.deadline - self.clock()) + self.settings.park_timeout
            self.scheduler.call_later(keep, lambda: self._forget(call))
        if call.relayed:
            return  # the node that took the call logs it
        self.call_log.put(self._record(call))

    async def logged(self) -> None:
        """Until the call-log rows of every call ended so far are stored."""
        await self.call_log.flush()

    def _forget(self, call: Call) -> None:
        self.ended.pop(call.id, None)
        for device_id in call.voip_pushed:
            _unindex(self.late_by_device, device_id, call.id)

    def _arm(self, call: Call, seconds: float) -> None:
        """(Re)start the timer that ends an unanswered call."""
        if call.timeout is not None:
            call.timeout.cancel()
        call.timeout = self.scheduler.call_later(seconds, lambda: self._timeout(call))

    def _timeout(self, call: Call) -> None:
        if call.ringing:
            self._end(call, Outcome.TIMEOUT)

    def _may_push(self, source: str, aor: str) -> bool:
        """Whether this call may wake `aor`'s devices: no source rings a phone more than
        a few times a minute, and no phone is rung more than its limit by everyone."""
        key = f"{source}|{aor}"
        if self.source_pushes.take(key) == 0 and self.callee_pushes.take(aor) == 0:
            return True
        if self._limited.due(key) is not None:  # one line a minute per source and callee
            log.warning("calls from %s to %s over the push limit: not pushed", source, aor)
        return False

    def stop(self) -> int:
        """The node is stopping: every ringing call gets its final answer now, 503 with
        Retry-After (the caller's proxy may try another node); the devices it woke get
        a missed call. Returns how many calls were ended."""
        ringing = list(self.calls.values())
        for call in ringing:
            self._end(call, Outcome.STOPPED)
        return len(ringing)

    def on_cancel(self, invite: ServerTransaction) -> bool:
        call = self.by_st.get(invite)
        if call is None:
            return False
        if call.pushed and self.clock() - call.started_at < QUICK_CANCEL:
            # INVITE + CANCEL at once rings a phone for nothing: it costs the source twice
            self.source_pushes.take(f"{call.source}|{call.aor}")
            log.debug("calls: %s cancelled at once: %s pays another push", call.id, call.source)
        # another node's call: why it ends (answered elsewhere, declined) goes on to the
        # phone, so CallKit ends its call with the right words
        self._end(call, Outcome.CANCELLED, reason=invite.cancel_reason if call.relayed else "")
        return True

    def decline(self, call_id: str, user: User) -> str:
        """The callee rejects a ringing call (the push's Decline action)."""
        call = self.calls.get(call_id)
        if call is None:
            return "gone" if call_id in self.ended else "unknown"
        if call.aor != user.aor:
            return "forbidden"
        self._end(call, Outcome.DECLINED)
        return "declined"

    # ------------------------------------------------ devices coming online
    def on_registered(self, binding: Binding, device: Device | None, received_at: float) -> None:
        """RFC 8599 fork-late: a device registered while a call waits for it."""
        for call in list(self.ringing_by_aor.get(binding.aor, {}).values()):
            self.trace.record("call", call.id, "register in",
                              device=binding.device_id or binding.key)
            if self._fork(call, binding):
                self.metrics.register_invite.observe(time.perf_counter() - received_at)
        if device is None:
            return
        for call in list(self.late_by_device.pop(device.device_id, {}).values()):
            if call.aor == binding.aor:
                self._late_cancel(call, binding)

    def _late_cancel(self, call: Call, binding: Binding) -> None:
        """CallKit shows every VoIP push as a call: give the late device the INVITE and
        at once a CANCEL with the reason, so it can end that call cleanly."""
        msg, peer = self._to_binding(call, binding)
        tx = self.uac.start(msg, peer, lambda resp: None)
        tx.cancel(_LATE_REASONS.get(call.outcome or Outcome.FAILED, REASON_MISSED))
        self.trace.record("call", call.id, "late invite + cancel", device=binding.device_id)

    # ----------------------------------------------------------------- pushes
    def _push_call(self, call: Call, devices: list[Device]) -> None:
        repeat: list[tuple[Device, Notification]] = []
        for d in devices:
            note = CallNotification(
                call_id=call.id,
                caller_uri=call.caller.uri,
                caller_number=call.caller.number,
                caller_name=call.caller.name,
                # the device is named in its pickup URI: we know who picked up
                pickup_uri=f"sip:{PICKUP_PREFIX}{call.id}.{d.device_id}@{self.domain}",
                expires_at=math.ceil(call.deadline),
            )
            call.pushed[d.device_id] = d
            if d.platform == "ios" and d.call_mode == "voip" and d.voip_token:
                call.voip_pushed.add(d.device_id)
            self._push([d], note)
            # iOS alert mode plays its ringtone once (~15 s): repeat while parked
            if d.platform == "ios" and d.call_mode == "alert":
                repeat.append((d, note))
        if repeat and self.settings.alert_repeat > 0:
            self._schedule_repeat(call, repeat)

    def _schedule_repeat(self, call: Call, pushes: list[tuple[Device, Notification]]) -> None:
        def again() -> None:
            if call.ringing:
                for device, note in pushes:
                    self._push([device], note)
                self._schedule_repeat(call, pushes)

        call.timers.append(self.scheduler.call_later(self.settings.alert_repeat, again))

    def push_accepted(self, note: Notification, sent: float, answered: float) -> None:
        """The first call push a provider accepted: INVITE in → push out, and → accepted."""
        if not isinstance(note, CallNotification):
            return
        call = self.calls.get(note.call_id) or self.ended.get(note.call_id)
        if call is not None and not call.push_measured:
            call.push_measured = True
            received = call.invite.received_at
            self.metrics.call_push.observe(sent - received)
            self.metrics.call_push_accepted.observe(answered - received)

    def _push(self, devices: list[Device], note: Notification) -> None:
        # Each started here, up to its request on the wire, and then a task of its own:
        # a task would only begin a loop turn later, behind whatever SIP work the loop
        # read meanwhile (the turn-long waits that made INVITE → push p99 ~30 ms)
        for device in devices:
            self.start(self.pusher.send(device, note))

    # ---------------------------------------------------------------- pickup
    async def _pickup(
        self, st: ServerTransaction, park_id: str, device_id: str, user: User | None
    ) -> None:
        """Explicit pickup: which call, and whether this device may take it; then the
        bridge (pickup.py) carries it out."""
        req = st.request
        if user is None:  # a pickup is always made as the callee, never trusted
            checked = await self.gate.authenticate(req, proxy=True)
            if isinstance(checked, Message):
                st.respond(checked)
                return
            user = checked
        call = self.calls.get(park_id)
        if call is None and park_id not in self.ended and self.parks is not None:
            there = self.parks.parked_elsewhere(park_id, user.aor, st.request.uri)
            if there is not None:  # parked on another node: the pickup goes there
                self._ring(st, user.aor, _caller_id(st.request, user), "", [there], [],
                           relayed=True)  # fmt: skip
                return
        if call is None:
            st.reply(481, "Call Gone" if park_id in self.ended else None)
            return
        if call.aor != user.aor:
            st.reply(403, "Forbidden (not your call)")
            return
        if req.body:
            st.reply(488, "Not Acceptable Here (pickup carries no offer)")
            return
        by = self._picked_up_by(call, device_id, req) or f"pickup:{req.source}"
        self.trace.record("call", call.id, "pickup", device=by)
        self._settle_answered(call, by)
        await self.pickups.bridge(st, call)

    def _picked_up_by(self, call: Call, device_id: str, req: Message) -> str:
        """Which pushed device picked up: so it is not sent the call again (INVITE +
        CANCEL for CallKit) when it registers. Named in its pickup URI; else its
        +sip.instance in the Contact, or the connection it registered on; else the
        one device that got a VoIP push. "" when it can't be told."""
        if device_id in call.pushed:
            return device_id
        contact = req.get("Contact") or ""
        for d in call.pushed.values():
            if d.instance and d.instance in contact:
                return d.device_id
        source = req.source
        for b in self.locations.live_bindings(call.aor):
            if b.device_id in call.pushed and source is not None and (
                (b.flow and b.flow == source.flow) or b.received == str(source)
            ):
                return b.device_id
        if len(call.voip_pushed) == 1:
            return next(iter(call.voip_pushed))
        return ""

    # ------------------------------------------------------- in-dialog traffic
    def on_in_dialog(self, st: ServerTransaction) -> None:
        proxy.pop_own_routes(st.request, self.wire.is_us)
        self.dialogs.request(st)

    def on_ack(self, ack: Message) -> bool:
        proxy.pop_own_routes(ack, self.wire.is_us)
        return self.pickups.on_ack(ack) or self.dialogs.ack(ack)

    def on_stray_response(self, resp: Message) -> bool:
        """A retransmitted 2xx after the branch transaction ended: on to the caller."""
        if resp.cseq[1] != "INVITE" or not 200 <= resp.status < 300:
            return False
        d = self.dialogs.by_call_id.get(resp.call_id)
        if not isinstance(d, ProxyDialog):
            return False
        resp.pop_first("Via")
        scrub_contacts(resp)
        self.wire.send(resp, d.caller)
        return True

    def _record(self, call: Call) -> CallRecord:
        outcome = call.outcome
        return CallRecord(
            call_id=call.id,
            aor=call.aor,
            caller_uri=call.caller.uri,
            caller_number=call.caller.number,
            caller_name=call.caller.name,
            started_at=call.started_at,
            ended_at=self.clock() if not call.ringing else 0.0,
            answered=call.state is CallState.ANSWERED,
            missed=outcome is not None and outcome.missed,
            reason=str(outcome or ""),
            answered_by=call.answered_by,
        )


def _unindex(index: dict[str, dict[str, Call]], key: str, call_id: str) -> None:
    calls = index.get(key)
    if calls is not None:
        calls.pop(call_id, None)
        if not calls:
            del index[key]


def _caller_id(req: Message, user: User | None) -> CallerId:
    """Who is calling, as shown on the push and in the call log: a local caller is the
    user who authenticated (the name is From's); a trusted peer's caller is its
    P-Asserted-Identity, else its From."""
    source = req.from_
    if user is not None:
        return CallerId(user.aor, user.username, source.display)
    pai = req.get_all("P-Asserted-Identity")
    if pai:
        with contextlib.suppress(SipParseError):
            source = NameAddr.parse(pai[0])
    uri = source.uri
    number = uri.user if uri.is_sip else uri.opaque.split(";")[0]
    return CallerId(str(uri.aor()) if uri.is_sip else str(uri), number, source.display)


def _address(req: Message) -> str:
    return req.source.host if req.source is not None else "?"


def _retry_later(req: Message, status: int) -> Message:
    resp = make_response(req, status, to_tag=new_tag())
    resp.add("Retry-After", RETRY_AFTER)
    return resp
