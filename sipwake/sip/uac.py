"""Sending requests of our own (as a UAC or a proxy branch) and waiting for the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sipwake.sip.message import Message
from sipwake.sip.peer import Peer
from sipwake.sip.transaction import ClientTransaction, TransactionLayer, new_branch, new_tag


class Uac:
    def __init__(
        self,
        address: Callable[[str], tuple[str, int]],
        transactions: TransactionLayer,
        send: Callable[[Message, Peer], bool],
    ) -> None:
        self.address = address  # transport → where others reach us over it
        self.transactions = transactions
        self.send_stateless = send  # an ACK to a 2xx: no transaction of its own
        self.branch_tag = ""  # in our branches: a response to them names who sent it

    def via(self, peer: Peer, branch: str | None = None) -> str:
        """Our Via value for a request going to `peer` over its transport."""
        transport = peer.transport
        host, port = self.local_address(transport)
        host = f"[{host}]" if ":" in host else host
        branch = branch or new_branch(self.branch_tag)
        return f"SIP/2.0/{transport.upper()} {host}:{port};branch={branch};rport"

    def local_address(self, transport: str) -> tuple[str, int]:
        return self.address(transport)

    def new_request(
        self,
        method: str,
        request_uri: str,
        from_: str,
        to: str,
        call_id: str | None = None,
        cseq: int = 1,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> Message:
        """A fresh out-of-dialog request from us (From gets a new tag unless it has one)."""
        msg = Message(method=method, uri=request_uri, body=body)
        msg.add("Max-Forwards", "70")
        msg.add("From", from_ if ";tag=" in from_ else f"{from_};tag={new_tag()}")
        msg.add("To", to)
        msg.add("Call-ID", call_id or f"{new_tag()}{new_tag()}@sipwake")
        msg.add("CSeq", f"{cseq} {method}")
        for name, value in headers or ():
            msg.add(name, value)
        return msg

    def start(
        self, msg: Message, peer: Peer, on_response: Callable[[Message], None]
    ) -> ClientTransaction:
        """Put our Via on top and start a client transaction; responses go to the callback."""
        msg.add("Via", self.via(peer), first=True)
        return self.transactions.request(msg, peer, on_response)

    async def send(
        self,
        msg: Message,
        peer: Peer,
        on_provisional: Callable[[Message], None] | None = None,
    ) -> Message:
        """Send and return the final response (408/503 synthesized on timeout/failure)."""
        final: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        def on_response(resp: Message) -> None:
            if resp.status >= 200:
                if not final.done():
                    final.set_result(resp)
            elif on_provisional is not None:
                on_provisional(resp)

        self.start(msg, peer, on_response)
        return await final
