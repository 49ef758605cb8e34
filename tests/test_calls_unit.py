"""CallService by itself: the real router and transaction layer on a manual clock,
in-memory stand-ins for what the service names as its dependencies, no sockets and
no waiting. Park, fork-late, pickup, first answer wins, missed, decline, Timer C,
alert repeats and the push limits, each with time moved by the test."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from sipwake.auth import Caller
from sipwake.calls.call import REASON_MISSED
from sipwake.calls.service import CallService
from sipwake.config import CallsConfig
from sipwake.push.notification import Notification
from sipwake.sip.message import Message, make_response
from sipwake.sip.peer import Peer
from sipwake.sip.uri import URI
from sipwake.store.models import Binding, CallRecord, Device, User
from tests.helpers.sipnode import SipNode, phone_peer, request
from tests.helpers.standins import DOMAIN, Locations, Users

ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
OFFER = b"v=0\r\no=bob 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=alice 2 2 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
T1 = 0.5


# ---------------------------------------------------------------- stand-ins
class Gate:
    """Local users are who their From says (a passed digest); nobody else gets in."""

    def __init__(self, users: Users) -> None:
        self.users = users

    def is_local(self, uri: URI) -> bool:
        return uri.is_sip and uri.host == DOMAIN

    async def admit(self, request: Message) -> Caller | Message:
        user = self.users.users.get(request.from_.uri.user)
        if user is None or not self.is_local(request.from_.uri):
            return make_response(request, 403, to_tag="gate")
        return Caller(user)

    async def authenticate(self, request: Message, proxy: bool = False) -> User | Message:
        user = self.users.users.get(request.from_.uri.user)
        return user if user is not None else make_response(request, 407, to_tag="gate")


@dataclass
class Pusher:
    pushes: list[tuple[str, Notification]] = field(default_factory=list)

    async def send(self, device: Device, notification: Notification) -> object:
        self.pushes.append((device.device_id, notification))
        return None

    def kinds(self, device_id: str | None = None) -> list[str]:
        return [n.kind for d, n in self.pushes if device_id is None or d == device_id]


@dataclass
class CallLog:
    records: dict[str, CallRecord] = field(default_factory=dict)

    def put(self, record: CallRecord) -> None:
        self.records[record.call_id] = record

    async def flush(self) -> None:
        pass


class Latency:
    def __init__(self) -> None:
        self.samples: list[float] = []

    def observe(self, seconds: float, /) -> None:
        self.samples.append(seconds)


@dataclass
class Metrics:
    call_push: Latency = field(default_factory=Latency)
    call_push_accepted: Latency = field(default_factory=Latency)
    register_invite: Latency = field(default_factory=Latency)


class World:
    """One CallService on a SipNode, with its stand-ins and a wall clock in step
    with the node's manual one."""

    def __init__(self, **settings: Any) -> None:
        self.node = SipNode()
        self.locations = Locations()
        self.users = Users("alice", "bob", "carol")
        self.pusher = Pusher()
        self.log = CallLog()
        self.metrics = Metrics()
        self.tasks: list[asyncio.Future[Any]] = []
        start = 1_800_000_000.0
        self.calls = CallService(
            CallsConfig(**{"park_timeout": 30, "alert_repeat": 15, **settings}), DOMAIN,
            locations=self.locations, users=self.users, gate=Gate(self.users),
            uac=self.node.uac, wire=self.node, pusher=self.pusher, call_log=self.log,
            metrics=self.metrics, spawn=lambda coro: self.tasks.append(asyncio.ensure_future(coro)),
            scheduler=self.node.scheduler, ack_wait=64 * T1,
            clock=lambda: start + self.node.scheduler.time(),
        )  # fmt: skip
        router = self.node.router
        router.route("INVITE", self.calls.on_invite)
        router.cancel_handlers.append(self.calls.on_cancel)
        router.ack_handlers.append(self.calls.on_ack)
        for method in ("BYE",):
            router.route(method, self.calls.on_in_dialog)

    async def settle(self, seconds: float = 0.0) -> None:
        await self.node.scheduler.settle(seconds)

    # ------------------------------------------------------------ the world
    def sleeping_iphone(self, device_id: str = "iphone", mode: str = "voip") -> Device:
        device = Device(device_id, ALICE, "apns", "ios", push_token="a" * 64,
                        voip_token="b" * 64 if mode == "voip" else "", topic="com.example",
                        call_mode=mode, instance=f"urn:uuid:{device_id}")  # fmt: skip
        self.locations.devices.setdefault(ALICE, []).append(device)
        return device

    def binding(self, peer: Peer, device: Device | None = None) -> Binding:
        key = device.device_id if device else f"plain-{peer.port}"
        return Binding(ALICE, key, f"sip:alice@{peer.host}:{peer.port}", 9e12, "c", 1,
                       received=str(peer), device_id=device.device_id if device else "")  # fmt: skip

    def live(self, peer: Peer, device: Device | None = None) -> Binding:
        binding = self.binding(peer, device)
        self.locations.bindings.setdefault(ALICE, []).append(binding)
        return binding

    async def call(self, to: str = ALICE, caller: str = BOB) -> Peer:
        """`caller` INVITEs `to`; returns the caller's address."""
        peer = phone_peer()
        self.node.receive(request("INVITE", to, caller, to, peer, OFFER), peer)
        await self.settle()
        return peer

    def cancel(self, caller: Peer) -> None:
        invite = self.node_request_from(caller)
        lines = invite.to_bytes().split(b"\r\n\r\n")[0].decode().split("\r\n")
        keep = [ln for ln in lines[1:] if ln.split(":", 1)[0] in ("Via", "From", "To", "Call-ID")]
        cancel = "\r\n".join([f"CANCEL {invite.uri} SIP/2.0", *keep, "CSeq: 1 CANCEL",
                              "Max-Forwards: 70", "Content-Length: 0"]) + "\r\n\r\n"  # fmt: skip
        self.node.receive(cancel.encode(), caller)

    def node_request_from(self, caller: Peer) -> Message:
        (st,) = [st for st in self.calls.by_st if st.request.source == caller]
        return st.request


async def parked(w: World, caller: str = BOB) -> tuple[Peer, str]:
    """A call to alice whose iPhone sleeps: parked; returns (caller, park id)."""
    peer = await w.call(caller=caller)
    assert w.node.responses_to(peer)[-1] == 180  # ringback at once
    (call,) = [c for c in w.calls.calls.values() if c.st.request.source == peer]
    return peer, call.id


# -------------------------------------------------------------------- tests
async def test_a_parked_call_pushes_then_times_out_as_missed() -> None:
    w = World()
    w.sleeping_iphone()
    caller, park_id = await parked(w)
    assert w.pusher.kinds() == ["call"]
    note = w.pusher.pushes[0][1]
    assert note.pickup_uri == f"sip:pickup-{park_id}.iphone@{DOMAIN}"  # type: ignore[attr-defined]
    await w.settle(29.9)
    assert w.node.responses_to(caller) == [180]  # still ringing
    await w.settle(0.2)
    assert w.node.responses_to(caller)[-1] == 480
    assert w.pusher.kinds() == ["call", "missed_call"]
    await w.calls.logged()
    record = w.log.records[park_id]
    assert record.missed and record.reason == "timeout" and not record.answered


async def test_fork_late_the_woken_phone_gets_the_invite_and_answers() -> None:
    w = World()
    device = w.sleeping_iphone()
    caller, park_id = await parked(w)
    await w.settle(3)  # the app wakes three seconds later and registers
    phone = phone_peer()
    w.calls.on_registered(w.live(phone, device), device, time.perf_counter())
    (invite,) = w.node.requests_to(phone, "INVITE")
    assert invite.body == OFFER and invite.get("Record-Route")
    w.node.answer(invite, 180)
    w.node.answer(invite, 200, ANSWER)
    assert w.node.responses_to(caller) == [180, 180, 200]
    assert w.node.to(caller)[-1].body == ANSWER
    assert len(w.metrics.register_invite.samples) == 1
    await w.settle(60)  # the park timeout is off: answered calls don't time out
    assert w.node.responses_to(caller)[-1] == 200
    await w.calls.logged()
    assert w.log.records[park_id].answered and w.log.records[park_id].answered_by == "iphone"
    # registering again brings nothing more: once per device
    w.calls.on_registered(w.binding(phone, device), device, time.perf_counter())
    assert len(w.node.requests_to(phone, "INVITE")) == 1


async def test_first_answer_wins_the_others_are_cancelled_and_told() -> None:
    w = World()
    w.sleeping_iphone("ipad")
    desk, laptop = phone_peer(), phone_peer()
    w.live(desk)
    w.live(laptop)
    caller = await w.call()
    (inv1,) = w.node.requests_to(desk, "INVITE")
    (inv2,) = w.node.requests_to(laptop, "INVITE")
    assert w.pusher.kinds("ipad") == ["call"]  # the sleeping one is pushed meanwhile
    w.node.answer(inv1, 180)
    w.node.answer(inv2, 200, ANSWER, tag="laptop")
    assert w.node.responses_to(caller)[-1] == 200
    (cancel,) = w.node.requests_to(desk, "CANCEL")
    assert cancel.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    await w.settle()
    assert w.pusher.kinds("ipad") == ["call", "call_cancelled"]
    assert w.pusher.pushes[-1][1].reason == "answered_elsewhere"  # type: ignore[attr-defined]


async def test_explicit_pickup_bridges_the_offer_and_the_answer() -> None:
    w = World()
    w.sleeping_iphone()
    caller, park_id = await parked(w)
    phone = phone_peer()
    pickup = request("INVITE", f"sip:pickup-{park_id}.iphone@{DOMAIN}", ALICE,
                     f"sip:pickup-{park_id}.iphone@{DOMAIN}", phone, call_id="pick@t")  # fmt: skip
    w.node.receive(pickup, phone)
    await w.settle()
    ok = w.node.to(phone)[-1]
    assert ok.status == 200 and ok.body == OFFER  # the caller's offer, byte for byte
    ack = (
        f"ACK sip:sipwake@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP {phone.host}:{phone.port};"
        f"branch=z9hG4bKack1\r\nFrom: {ok.get('From')}\r\nTo: {ok.get('To')}\r\n"
        f"Call-ID: pick@t\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(ANSWER)}\r\n\r\n"
    ).encode() + ANSWER
    w.node.receive(ack, phone)
    await w.settle()
    answered = w.node.to(caller)[-1]
    assert answered.status == 200 and answered.body == ANSWER
    assert w.calls.counts()["dialogs"] == 2  # both legs, bridged
    assert not w.calls.late_by_device  # the one that picked up is not sent it again


async def test_a_pickup_whose_ack_never_comes_gives_the_caller_480() -> None:
    w = World()
    w.sleeping_iphone()
    caller, park_id = await parked(w)
    phone = phone_peer()
    uri = f"sip:pickup-{park_id}.iphone@{DOMAIN}"
    w.node.receive(request("INVITE", uri, ALICE, uri, phone), phone)
    await w.settle()
    assert w.node.to(phone)[-1].status == 200
    await w.settle(64 * T1 + 0.1)
    assert w.node.responses_to(caller)[-1] == 480


async def test_the_caller_hangs_up_a_missed_call() -> None:
    w = World()
    w.sleeping_iphone()
    caller, park_id = await parked(w)
    await w.settle(10)
    w.cancel(caller)
    await w.settle()
    assert 487 in w.node.responses_to(caller)
    assert w.pusher.kinds() == ["call", "missed_call"]
    await w.calls.logged()
    assert w.log.records[park_id].reason == "cancelled" and w.log.records[park_id].missed


async def test_decline_gives_the_caller_603_and_tells_the_devices() -> None:
    w = World()
    w.sleeping_iphone()
    caller, park_id = await parked(w)
    assert w.calls.decline(park_id, User("bob", DOMAIN, "", "")) == "forbidden"
    assert w.calls.decline(park_id, User("alice", DOMAIN, "", "")) == "declined"
    await w.settle()
    assert w.node.responses_to(caller)[-1] == 603
    assert w.pusher.kinds() == ["call", "call_cancelled"]
    assert w.calls.decline(park_id, User("alice", DOMAIN, "", "")) == "gone"


async def test_timer_c_ends_a_call_a_live_phone_lets_ring() -> None:
    w = World()
    phone = phone_peer()
    w.live(phone)
    caller = await w.call()
    (invite,) = w.node.requests_to(phone, "INVITE")
    w.node.answer(invite, 180)
    await w.settle(179)
    assert w.node.responses_to(caller) == [180]
    await w.settle(2)  # RFC 3261 Timer C: three minutes of ringing
    assert w.node.responses_to(caller)[-1] == 480
    assert w.node.requests_to(phone, "CANCEL")


async def test_alert_mode_iphones_are_alerted_again_while_parked() -> None:
    w = World(alert_repeat=15, park_timeout=40)
    w.sleeping_iphone("old-iphone", mode="alert")
    caller, _ = await parked(w)
    await w.settle(14)
    assert w.pusher.kinds() == ["call"]
    await w.settle(1)
    await w.settle(15)
    assert w.pusher.kinds() == ["call"] * 3  # at 0, 15 and 30 s: its ringtone plays ~15 s
    await w.settle(10)
    assert w.node.responses_to(caller)[-1] == 480
    await w.settle(60)
    assert w.pusher.kinds() == ["call"] * 3 + ["missed_call"]  # and nothing after the end


async def test_push_limits_follow_the_manual_clock() -> None:
    w = World(source_rate=3, source_burst=2, callee_rate=0)
    w.sleeping_iphone()
    statuses = []
    for _ in range(3):
        peer = await w.call()
        statuses.append(w.node.responses_to(peer)[-1])
        if statuses[-1] == 180:
            w.cancel(peer)  # at once: the second token of the burst goes too
            await w.settle()
    assert statuses == [180, 480, 480]
    assert w.pusher.kinds().count("call") == 1
    await w.settle(60)  # a minute later the bucket has refilled
    peer = await w.call()
    assert w.node.responses_to(peer)[-1] == 180


@pytest.mark.parametrize("caller", ["mallory", "carol"])
async def test_who_may_call(caller: str) -> None:
    w = World()
    w.sleeping_iphone()
    peer = await w.call(caller=f"sip:{caller}@{DOMAIN}")
    assert w.node.responses_to(peer)[-1] == (403 if caller == "mallory" else 180)
    assert w.pusher.kinds() == ([] if caller == "mallory" else ["call"])


async def test_a_flow_failed_branch_wakes_its_device_and_parks_the_call() -> None:
    """Cluster: the phone left another node's connection just before the call; that
    node answers the branch 430 Flow Failed, and the call parks and pushes instead."""
    w = World()
    device = w.sleeping_iphone()
    phone = phone_peer()
    w.live(phone, device)  # this node still believes it is live
    caller = await w.call()
    assert w.pusher.kinds() == []  # reached: not pushed
    (invite,) = w.node.requests_to(phone, "INVITE")
    w.node.answer(invite, 430)
    await w.settle()
    assert w.node.responses_to(caller) == [180]  # parked: ringback, no failure
    assert w.pusher.kinds() == ["call"]
    await w.settle(30.1)  # and it ends as a parked call does
    assert w.node.responses_to(caller)[-1] == 480
    assert w.pusher.kinds() == ["call", "missed_call"]


async def test_a_flow_failed_branch_pays_the_push_limits_before_it_wakes() -> None:
    """The INVITE found the phone live (another node's stale binding) and paid nothing;
    the push after its 430 pays the limits, and over them nobody is woken: the caller
    gets 480, not the 430 meant for us."""
    w = World(source_rate=3, source_burst=1, callee_rate=0)
    device = w.sleeping_iphone()
    phone = phone_peer()
    w.live(phone, device)
    statuses = []
    for _ in range(2):
        caller = await w.call()
        (invite,) = w.node.requests_to(phone, "INVITE")[-1:]
        w.node.answer(invite, 430)
        await w.settle()
        statuses.append(w.node.responses_to(caller)[-1])
    assert statuses == [180, 480]  # the burst is one push: the first woke, the second not
    assert w.pusher.kinds() == ["call"]


async def test_a_flow_failed_branch_leaves_its_device_a_late_invite_and_cancel() -> None:
    """The branch to a stale binding never reached the iPhone (430): CallKit rang for
    the push, so when the caller hangs up and the app registers, it gets the INVITE and
    at once a CANCEL, as any late VoIP-pushed device does."""
    w = World()
    device = w.sleeping_iphone()
    stale = phone_peer()
    w.live(stale, device)
    caller = await w.call()
    (invite,) = w.node.requests_to(stale, "INVITE")
    w.node.answer(invite, 430)
    await w.settle()
    assert w.pusher.kinds() == ["call"]
    w.locations.bindings.clear()
    w.cancel(caller)
    await w.settle()
    assert w.node.responses_to(caller)[-1] == 487
    phone = phone_peer()
    w.calls.on_registered(w.live(phone, device), device, time.perf_counter())
    (late,) = w.node.requests_to(phone, "INVITE")
    w.node.answer(late, 180)  # (a CANCEL follows a provisional answer, RFC 3261 9.1)
    await w.settle()
    (cancel,) = w.node.requests_to(phone, "CANCEL")
    assert cancel.get("Reason") == REASON_MISSED  # why CallKit ends its call
