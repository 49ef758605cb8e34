"""The inbox by itself: the real router and transaction layer on a manual clock, an
in-memory SQLite store, stand-ins for the rest. A sleeping user's messages are stored
and pushed (a burst coalesced to one push per interval), a live phone's 2xx within the
forward timeout makes a 200, a silent one a 202 and a push when the timeout passes,
and a registration delivers the backlog in order — all with time moved by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from sipwake.auth import Caller
from sipwake.config import MessagesConfig
from sipwake.messages.inbox import Inbox
from sipwake.push.notification import MessageNotification, Notification
from sipwake.sip.message import Message, make_response
from sipwake.sip.peer import Peer
from sipwake.store.models import Binding, Device, User
from sipwake.store.sqlite import SQLiteStore
from sipwake.tasks import Tasks
from tests.helpers.sipnode import SipNode, phone_peer, request
from tests.helpers.standins import DOMAIN, Locations, Users

ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"


class Gate:
    async def admit(self, request: Message) -> Caller | Message:
        return Caller(User(request.from_.uri.user, DOMAIN, "", ""))


@dataclass
class Result:
    device_id: str
    outcome: str = "delivered"


@dataclass
class Broadcaster:
    sent: list[tuple[float, MessageNotification]] = field(default_factory=list)
    clock: Any = None

    async def send_all(self, devices: list[Device], notification: Notification) -> list[Result]:
        assert isinstance(notification, MessageNotification)
        self.sent.append((self.clock(), notification))
        return [Result(d.device_id) for d in devices]


class World:
    def __init__(self, store: SQLiteStore, **settings: Any) -> None:
        self.node = SipNode()
        self.store = store
        self.locations = Locations()
        self.tasks = Tasks("inbox")
        self.pusher = Broadcaster(clock=self.node.scheduler.time)
        self.inbox = Inbox(
            MessagesConfig(**{"forward_timeout": 4.0, **settings}), DOMAIN,
            store=store, locations=self.locations, users=Users("alice", "bob"), gate=Gate(),
            uac=self.node.uac, pusher=self.pusher, tasks=self.tasks,
            scheduler=self.node.scheduler,
        )  # fmt: skip
        self.node.router.route("MESSAGE", self.inbox.on_message)
        self.sender = phone_peer()
        self.sent_to_sender = 0

    async def settle(self, seconds: float = 0.0) -> None:
        await self.node.scheduler.settle(seconds)

    async def message(self, text: str) -> None:
        """bob sends alice `text` (the answer is read with `answer()`)."""
        self.node.receive(request("MESSAGE", ALICE, BOB, ALICE, self.sender, text.encode(),
                                  extra="Content-Type: text/plain\r\n"), self.sender)  # fmt: skip
        await self.settle()

    def answers(self) -> list[int]:
        return self.node.responses_to(self.sender)

    def sleeping_phone(self) -> Device:
        device = Device("pixel", ALICE, "fcm", "android", push_token="t1", topic="p")
        self.locations.devices[ALICE] = [device]
        return device

    def live(self, peer: Peer, device: Device | None = None) -> Binding:
        binding = Binding(ALICE, "phone", f"sip:alice@{peer.host}:{peer.port}", 9e12, "c", 1,
                          received=str(peer), device_id=device.device_id if device else "")  # fmt: skip
        self.locations.bindings[ALICE] = [binding]
        return binding


@pytest.fixture
async def store() -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(":memory:")
    await s.open()
    yield s
    await s.close()


async def test_a_burst_to_a_sleeping_user_is_stored_and_pushed_once_an_interval(
    store: SQLiteStore,
) -> None:
    w = World(store)
    w.sleeping_phone()
    for i in range(5):
        await w.message(f"hello {i}")
    assert w.answers() == [202] * 5  # each committed before its answer
    assert [n.body for _, n in w.pusher.sent] == ["hello 0"]  # the first at once
    await w.settle(1.0)  # one interval later: the newest, with the count
    assert [(at, n.body, n.unread) for at, n in w.pusher.sent] == [
        (0.0, "hello 0", 1), (1.0, "hello 4", 5)
    ]
    await w.settle(5.0)
    assert len(w.pusher.sent) == 2  # nothing new: nothing more
    assert len(await store.messages(ALICE)) == 5


async def test_a_live_phone_answering_in_time_makes_a_200(store: SQLiteStore) -> None:
    w = World(store)
    phone = phone_peer()
    w.live(phone)
    await w.message("are you there?")
    (delivered,) = w.node.requests_to(phone, "MESSAGE")
    assert delivered.body == b"are you there?" and w.answers() == []
    await w.settle(3.0)  # the phone takes its time, within the forward timeout
    w.node.answer(delivered, 200)
    await w.settle()
    assert w.answers() == [200] and w.pusher.sent == []


async def test_a_silent_phone_means_202_and_a_push_at_the_forward_timeout(
    store: SQLiteStore,
) -> None:
    w = World(store)
    device = w.sleeping_phone()
    w.live(phone_peer(), device)  # registered, but it never answers
    await w.message("hello?")
    await w.settle(3.9)
    assert w.answers() == []
    await w.settle(0.2)
    assert w.answers() == [202]
    assert [n.body for _, n in w.pusher.sent] == ["hello?"]


async def test_registration_delivers_the_backlog_in_order_once(store: SQLiteStore) -> None:
    w = World(store)
    for i in range(6):
        await w.message(f"m{i}")
    phone = phone_peer()
    binding = w.live(phone)
    await w.inbox.load()
    w.inbox.on_registered(binding, None, 0.0)
    await w.settle()
    got: list[bytes] = []
    for _ in range(6):  # a window of 4 in flight: each 2xx lets the next one go
        pending = [m for m in w.node.requests_to(phone, "MESSAGE") if m.body not in got]
        assert pending, got
        w.node.receive(make_response(pending[0], 200, to_tag="p"), pending[0].source)
        got.append(pending[0].body)
        await w.settle()
    assert got == [f"m{i}".encode() for i in range(6)]
    await w.inbox.courier.idle()
    w.inbox.on_registered(binding, None, 0.0)  # again: nothing is sent twice
    await w.settle()
    assert len(w.node.requests_to(phone, "MESSAGE")) == 6
    assert await store.unread_count(ALICE) == 0


async def test_another_nodes_push_holds_ours_for_an_interval(store: SQLiteStore) -> None:
    """Cluster: the node told that another pushed alice a message push a moment ago
    waits out that interval before its own, as if the push had been its own."""
    w = World(store)
    w.sleeping_phone()
    told: list[str] = []
    w.inbox.pushes.on_push = told.append
    w.inbox.pushes.pushed_elsewhere(ALICE)  # another node pushed alice at 0.0
    await w.settle(0.25)
    await w.message("through this node")
    assert w.answers() == [202] and w.pusher.sent == []  # held: not a second push at once
    await w.settle(0.75)
    assert [(at, n.body) for at, n in w.pusher.sent] == [(1.0, "through this node")]
    assert told == [ALICE]  # and the others are told of ours
