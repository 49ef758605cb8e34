"""UDP sends leave at the end of the loop turn, in order, and none is lost at close."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from sipwake.sip.peer import Peer
from sipwake.sip.transport import TransportLayer


def receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


async def test_datagrams_of_one_turn_leave_together_in_order() -> None:
    layer = TransportLayer(lambda msg: None)
    await layer.listen("udp", "127.0.0.1", 0)
    sock = receiver()
    peer = Peer("udp", "127.0.0.1", sock.getsockname()[1])
    try:
        for i in range(3):
            assert layer.send_bytes(b"datagram %d" % i, peer)
        sock.setblocking(False)
        try:
            sock.recv(100)
            raise AssertionError("sent before the loop turn ended")
        except BlockingIOError:
            pass
        sock.setblocking(True)
        await asyncio.sleep(0)  # one loop turn: the queued datagrams go out
        got = await asyncio.to_thread(lambda: [sock.recv(100) for _ in range(3)])
        assert got == [b"datagram 0", b"datagram 1", b"datagram 2"]
    finally:
        await layer.close()
        sock.close()


async def test_close_sends_what_was_queued() -> None:
    layer = TransportLayer(lambda msg: None)
    await layer.listen("udp", "127.0.0.1", 0)
    sock = receiver()
    try:
        layer.send_bytes(b"final answer", Peer("udp", "127.0.0.1", sock.getsockname()[1]))
        await layer.close()  # SIGTERM's path: the last responses still leave
        assert await asyncio.to_thread(sock.recv, 100) == b"final answer"
    finally:
        sock.close()


def test_a_name_is_refused_at_once_and_a_bad_datagram_spares_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        layer = TransportLayer(lambda msg: None)
        await layer.listen("udp", "127.0.0.1", 0)  # IPv4 only
        sock = receiver()
        try:
            with pytest.raises(ValueError):  # the transaction layer's transport error
                layer.send_bytes(b"x", Peer("udp", "phone.example.com", 5060))
            layer.send_bytes(b"to nowhere", Peer("udp", "::1", 5060))  # no IPv6 socket
            layer.send_bytes(b"still sent", Peer("udp", "127.0.0.1", sock.getsockname()[1]))
            await asyncio.sleep(0)
            assert await asyncio.to_thread(sock.recv, 100) == b"still sent"
        finally:
            await layer.close()
            sock.close()

    # uvloop, as `sipwake serve` runs: its sendto raises where asyncio's reports
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(go())
    assert "datagram to ('::1', 5060) not sent" in caplog.text
