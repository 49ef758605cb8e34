"""A lean MESSAGE load generator over UDP: a sender that keeps `window` requests in
flight, retransmits like a UAC (T1 doubling up to T2, gives up after 64*T1) and
records the final status of each. Used by the crash test and bench/messages.py.

Unauthenticated: the server must list 127.0.0.1 in `[sip] trusted_peers`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

T1, T2 = 0.5, 4.0


@dataclass(slots=True)
class _Pending:
    key: str
    data: bytes
    sent_at: float
    interval: float
    first_at: float


class MessageLoad(asyncio.DatagramProtocol):
    def __init__(
        self,
        server: tuple[str, int],
        domain: str,
        sender: str = "loader",
        window: int = 50,
        on_final: Callable[[str, int], None] | None = None,
    ) -> None:
        self.server = server
        self.domain = domain
        self.sender = sender
        self.window = window
        self.on_final = on_final
        self.finals: dict[str, int] = {}  # key → final status (408: no answer)
        self._pending: dict[str, _Pending] = {}  # call-id → request
        self._slots = asyncio.Semaphore(window)
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = False
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def start(self) -> MessageLoad:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self._timer = loop.call_later(0.05, self._retransmit)
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.local = transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Send nothing new and stop waiting for answers (the server is gone)."""
        self._stopped = True
        for _ in self._pending:
            self._slots.release()  # run() may wait for a slot: it sees _stopped and returns
        self._pending.clear()
        self._idle.set()

    def request(self, to_user: str, key: str, body: bytes, content_type: str) -> bytes:
        call_id = f"{key}.{secrets.token_hex(4)}"
        host, port = self.local
        return (
            f"MESSAGE sip:{to_user}@{self.domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{self.sender}@{self.domain}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{to_user}@{self.domain}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 MESSAGE\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def run(self, to_user: str, items: list[tuple[str, bytes, str]]) -> None:
        """Send (key, body, content type) items in order, `window` at a time; returns
        when each has a final answer (or `stop()` was called)."""
        for key, body, content_type in items:
            await self._slots.acquire()
            if self._stopped:
                return
            data = self.request(to_user, key, body, content_type)
            call_id = data.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
            now = time.monotonic()
            self._pending[call_id] = _Pending(key, data, now, T1, now)
            self._idle.clear()
            assert self._transport is not None
            self._transport.sendto(data, self.server)
        await self._idle.wait()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.startswith(b"SIP/2.0 "):
            return
        status = int(data[8:11])
        if status < 200:
            return
        start = data.find(b"\r\nCall-ID: ")
        if start < 0:
            return
        end = data.find(b"\r\n", start + 11)
        self._final(data[start + 11 : end].decode(), status)

    def _final(self, call_id: str, status: int) -> None:
        pending = self._pending.pop(call_id, None)
        if pending is None:
            return  # a retransmitted answer
        self.finals[pending.key] = status
        if self.on_final is not None:
            self.on_final(pending.key, status)
        self._slots.release()
        if not self._pending:
            self._idle.set()

    def _retransmit(self) -> None:
        now = time.monotonic()
        for call_id, p in list(self._pending.items()):
            if now - p.first_at > 64 * T1:
                self._final(call_id, 408)
            elif now - p.sent_at >= p.interval and self._transport is not None:
                self._transport.sendto(p.data, self.server)
                p.sent_at, p.interval = now, min(p.interval * 2, T2)
        if not self._stopped:
            self._timer = asyncio.get_running_loop().call_later(0.05, self._retransmit)
