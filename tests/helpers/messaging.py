"""MESSAGEs to a node under test: CPIM/IMDN bodies, sending one, a phone that answers
and keeps what it gets (`Handset`), and a node with users alice and bob."""

from __future__ import annotations

import asyncio
from typing import Any

from sipwake.sip.message import Message
from tests.helpers.agent import Agent, respond
from tests.helpers.node import DOMAIN, Running, ServerFactory

BOB = f"sip:bob@{DOMAIN}"
TEXT = "text/plain;charset=UTF-8"


def cpim(text: str | bytes, imdn_id: str, sender: str = '"Alice A." <sip:alice@example.com>',
         inner: str = TEXT) -> bytes:
    body = text.encode() if isinstance(text, str) else text
    return (
        f"From: {sender}\r\nTo: <{BOB}>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
        f"imdn.Message-ID: {imdn_id}\r\nimdn.Disposition-Notification: positive-delivery\r\n"
        f"\r\nContent-Type: {inner}\r\n\r\n"
    ).encode() + body


async def send(agent: Agent, to: str, body: bytes, content_type: str = TEXT,
               **headers: str) -> Message:
    hdrs = {"To": f"<sip:{to}@{DOMAIN}>", "Content-Type": content_type, **headers}
    return await agent.request("MESSAGE", f"sip:{to}@{DOMAIN}", hdrs, body)


class Handset:
    """A phone that answers every MESSAGE sent to it (`status`) and keeps them."""

    def __init__(self, agent: Agent, status: int = 200) -> None:
        self.agent = agent
        self.status = status
        self.got: list[Message] = []
        self._seen: set[tuple[str, int]] = set()
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._answer())

    async def _answer(self) -> None:
        while True:
            req = await self.agent.requests.get()
            respond(self.agent, req, self.status if req.method == "MESSAGE" else 200)
            key = (req.call_id, req.cseq[0])
            if req.method == "MESSAGE" and key not in self._seen:  # not a retransmission
                self._seen.add(key)
                self.got.append(req)
                self._changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Message]:
        async with asyncio.timeout(timeout):
            while len(self.got) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.got

    def stop(self) -> None:
        self._task.cancel()


async def setup(start_server: ServerFactory, push_interval: float = 0.05,
                **messages: Any) -> tuple[Running, Agent]:
    r = await start_server(messages={"forward_timeout": 0.5, **messages})
    r.server.inbox.pushes.interval = push_interval  # 1 s in production; tests of it say so
    await r.add_user("alice")
    await r.add_user("bob")
    return r, await r.phone("alice")
