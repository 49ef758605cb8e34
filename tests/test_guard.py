"""What one source may take from the SIP listeners (sip/guard.py): caps on stream
connections per address and in total, time limits on half messages and on idle
connections without a registration, and a per-address message rate — each against a
real server, plus the review's two reproductions: 1,100 idle TCP connections under a
1,024 descriptor limit, and a REGISTER flood from one address."""

from __future__ import annotations

import asyncio
import resource
import shutil
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers.agent import Agent
from tests.helpers.node import DOMAIN, Running, ServerFactory
from tests.helpers.wait import wait_for
from tests.served import serve

SCENARIOS = Path(__file__).parent / "sipp"

OPTIONS = (
    "OPTIONS sip:{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{n};rport\r\n"
    "From: <sip:probe@{domain}>;tag=p{n}\r\nTo: <sip:{domain}>\r\nCall-ID: flood-{n}\r\n"
    "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


async def guarded(start_server: ServerFactory, **sip: Any) -> Running:
    r = await start_server(sip={"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], **sip})
    await r.add_user("alice")
    return r


async def connect(r: Running, host: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*r.addr("tcp"), local_addr=(host, 0))


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 5) -> bool:
    """True when the server closes (or resets) the connection within `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            return await reader.read() == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_connections_per_address_are_capped(start_server: ServerFactory) -> None:
    r = await guarded(start_server, max_connections_per_address=5)
    conns = [await connect(r, "127.0.0.2") for _ in range(8)]
    shut = [await closed_by_server(reader, timeout=0.5) for reader, _ in conns]
    assert shut.count(True) == 3  # the three over the cap, at once
    phone = await r.phone("alice", transport="tcp", host="127.0.0.3")  # another address
    assert (await phone.register()).status == 200
    for _, writer in conns:
        writer.close()


async def test_at_the_total_cap_idle_strangers_make_room_never_phones(
    start_server: ServerFactory,
) -> None:
    r = await guarded(start_server, max_connections=4)
    phone = await r.phone("alice", transport="tcp", host="127.0.0.4")
    assert (await phone.register()).status == 200
    idle = [await connect(r, "127.0.0.2") for _ in range(10)]  # each evicts an older one
    await wait_for(lambda: len(r.server.transport.guard) == 4)
    assert r.server.transport.guard.evicted >= 7
    # the registered phone kept its connection and is still reached over it
    assert (await phone.request("OPTIONS", f"sip:{DOMAIN}")).status == 200
    assert len(r.server.registrar.live_bindings(f"sip:alice@{DOMAIN}")) == 1
    late = await r.phone("alice", transport="tcp", host="127.0.0.3")
    assert (await late.register(params=";x=late")).status == 200
    for _, writer in idle:
        writer.close()


async def test_half_a_message_may_not_hold_a_connection(start_server: ServerFactory) -> None:
    r = await guarded(start_server, message_timeout=0.6, idle_timeout=60)
    reader, writer = await connect(r, "127.0.0.2")
    writer.write(b"REGISTER sip:example.com SIP/2.0\r\n")

    async def trickle() -> None:  # a byte now and then: the clock does not restart
        for _ in range(20):
            await asyncio.sleep(0.1)
            writer.write(b"X")

    dripping = asyncio.ensure_future(trickle())
    assert await closed_by_server(reader, timeout=3)
    dripping.cancel()


async def test_idle_strangers_go_registered_phones_stay(start_server: ServerFactory) -> None:
    r = await guarded(start_server, idle_timeout=0.5)
    phone = await r.phone("alice", transport="tcp")
    assert (await phone.register()).status == 200
    reader, _ = await connect(r, "127.0.0.2")
    assert await closed_by_server(reader, timeout=3)
    assert not phone.closed.is_set()  # idle just as long, but it carries a binding
    assert (await phone.request("OPTIONS", f"sip:{DOMAIN}")).status == 200


async def test_one_address_over_its_rate_is_dropped_others_are_answered(
    start_server: ServerFactory,
) -> None:
    r = await guarded(start_server, source_rate=50, source_burst=20)
    host, port = r.addr("udp")
    answers: list[bytes] = []

    class Counting(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            answers.append(data)

    loop = asyncio.get_running_loop()
    flood, _ = await loop.create_datagram_endpoint(Counting, local_addr=("127.0.0.2", 0))
    mine = flood.get_extra_info("sockname")[1]
    for n in range(500):
        flood.sendto(OPTIONS.format(domain=DOMAIN, host="127.0.0.2", port=mine, n=n).encode(),
                     (host, port))  # fmt: skip
        if n % 50 == 0:
            await asyncio.sleep(0)  # the server shares this loop: let it read
    await wait_for(lambda: r.server.transport.sources.dropped + len(answers) >= 500)
    flood.close()
    answers_count = len(answers)
    assert 20 <= answers_count < 100  # the burst, and what trickled back in
    assert r.server.transport.sources.dropped >= 400
    other = await r.phone("alice", host="127.0.0.3")
    assert (await other.register()).status == 200


# ------------------------------------------------------------- reproductions
def _nofile_1024() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


async def test_1100_idle_tcp_connections_leave_sip_and_http_answering(tmp_path: Path) -> None:
    """The review's: 1,100 idle sockets under a 1,024 descriptor limit stopped SIP over
    TCP and the HTTP API. Here from eleven addresses, a hundred each."""
    toml = (f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]\n'
            '[http]\nlisten = "127.0.0.1:0"\n')  # fmt: skip
    served = await serve(tmp_path, toml, preexec=_nofile_1024)
    sockets: list[socket.socket] = []
    try:
        address = served.sip["tcp"]
        for i in range(1100):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i // 100}", 0))
            s.setblocking(False)
            try:
                s.connect(address)
            except BlockingIOError:
                pass
            sockets.append(s)
        phone = await Agent("alice", "secret", DOMAIN, address, "tcp", local_host="127.0.0.99").start()
        assert (await phone.register()).status == 200
        phone.close()
        async with aiohttp.ClientSession() as http, http.get(f"{served.http}/healthz") as got:
            assert got.status == 200
        assert "open-file limit 1024" in "\n".join(served.log)
    finally:
        for s in sockets:
            s.close()
        assert await served.stop() == 0
    assert "out of system resource" not in "\n".join(served.log)


@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp missing: apt-get install sip-tester")
async def test_a_register_flood_from_one_address_leaves_the_others_answered(
    tmp_path: Path,
) -> None:
    """At 53k REGISTER/s from one address, other users' REGISTERs got 0 of 5 answers."""
    toml = f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n'
    served = await serve(tmp_path, toml)
    host, port = served.sip["udp"]
    flood = await asyncio.create_subprocess_exec(
        "sipp", f"{host}:{port}", "-sf", str(SCENARIOS / "register_flood.xml"),
        "-i", "127.0.0.2", "-m", "400000", "-r", "50000", "-timeout", "9s", "-nostdin",
        cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        phone = await Agent("alice", "secret", DOMAIN, (host, port), local_host="127.0.0.3").start()
        await wait_for(lambda: served.log_has("sends over"), timeout=5)  # it is flooding now
        answered = 0
        for _ in range(5):
            try:
                resp = await phone.request(
                    "REGISTER", f"sip:{DOMAIN}", {"Contact": phone.contact()}, timeout=1.5
                )
                answered += resp.status == 200
            except TimeoutError:
                pass
        phone.close()
        assert answered == 5
    finally:
        if flood.returncode is None:
            flood.kill()
        await flood.wait()
        assert await served.stop() == 0
