"""Router.route(..., eager=...): a handler's first steps run in the callback that read
the request; one that never waits is answered without a Task, one that waits goes on in
a Task, and failures are answered as for any async handler."""

from __future__ import annotations

import asyncio

from sipwake.sip.errors import SipParseError
from sipwake.sip.peer import Peer
from sipwake.sip.transaction import ServerTransaction
from tests.helpers.sipnode import SipNode, request

PHONE = Peer("udp", "192.0.2.7", 5062)
URI = "sip:example.com"


def register(node: SipNode) -> None:
    node.receive(request("REGISTER", URI, "sip:a@example.com", "sip:a@example.com", PHONE),
                 PHONE)  # fmt: skip


async def test_a_handler_that_never_waits_is_answered_at_once_without_a_task() -> None:
    node = SipNode()

    async def handler(st: ServerTransaction) -> None:
        st.reply(401)

    node.router.route("REGISTER", handler, eager=lambda request: True)
    register(node)
    assert node.responses_to(PHONE) == [401]  # before any turn of the loop
    assert len(node.router.tasks) == 0


async def test_a_handler_that_waits_goes_on_in_a_task() -> None:
    node = SipNode()
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def handler(st: ServerTransaction) -> None:
        steps.append("first")
        status = await gate
        steps.append("after")
        assert asyncio.current_task() is not None
        st.reply(status)

    node.router.route("REGISTER", handler, eager=lambda request: True)
    register(node)
    assert steps == ["first"] and len(node.router.tasks) == 1
    gate.set_result(200)
    await node.router.drain()
    assert steps == ["first", "after"]
    assert node.responses_to(PHONE) == [200]


async def test_a_waiting_handler_is_cancelled_where_it_waits() -> None:
    node = SipNode()
    cancelled = asyncio.Event()

    async def handler(st: ServerTransaction) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    node.router.route("REGISTER", handler, eager=lambda request: True)
    register(node)
    await node.router.tasks.stop()
    assert cancelled.is_set()


async def test_failures_in_the_first_steps_are_answered() -> None:
    node = SipNode()

    async def broken(st: ServerTransaction) -> None:
        raise RuntimeError("bug")

    async def unreadable(st: ServerTransaction) -> None:
        raise SipParseError("bad Expires")

    node.router.route("REGISTER", broken, eager=lambda request: True)
    register(node)
    node.router.route("REGISTER", unreadable, eager=lambda request: True)
    register(node)
    assert node.responses_to(PHONE) == [500, 400]
    assert "bad Expires" in node.to(PHONE)[-1].reason


async def test_eager_only_when_the_request_says_so() -> None:
    node = SipNode()

    async def handler(st: ServerTransaction) -> None:
        st.reply(401)

    node.router.route("REGISTER", handler, eager=lambda request: request.get("x-now") is not None)
    register(node)
    assert node.responses_to(PHONE) == []  # in a Task: after a turn of the loop
    await node.router.drain()
    assert node.responses_to(PHONE) == [401]
