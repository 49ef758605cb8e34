"""SIP over WebSocket (RFC 7118): a browser-style phone registers over a WebSocket, is
reached over it, and the transport refuses what it must refuse."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, TextMessage
from wsproto.events import Message as WsMessage
from wsproto.events import Request as WsRequest

from sipwake.sip import websocket
from sipwake.sip.message import parse
from sipwake.sip.peer import Peer
from tests.helpers.agent import Agent, Dialer, next_request, respond
from tests.helpers.certs import self_signed
from tests.helpers.node import DOMAIN, Running, ServerFactory, instance_id
from tests.helpers.wait import wait_for

OFFER = b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
VOIP = "b2" * 32
APNS = f";pn-provider=apns;pn-prid={VOIP};pn-param=ABCD123456.com.example.dialer.voip"
WS_SERVER: dict[str, Any] = {
    "listen": ["udp:127.0.0.1:0", "ws:127.0.0.1:0"],
    "trusted_peers": ["127.0.0.1"],
}


async def ws_phone(r: Running, user: str = "alice") -> Agent:
    agent = await Agent(user, "secret", DOMAIN, r.addr("ws"), "ws").start()
    r.agents.append(agent)
    return agent


@pytest.fixture
async def ws_server(start_server: ServerFactory) -> Running:
    r = await start_server(sip=WS_SERVER, calls={"park_timeout": 5})
    await r.add_user("alice")
    await r.add_user("bob")
    return r


async def test_register_over_websocket_then_a_call_reaches_it(ws_server: Running) -> None:
    r = ws_server
    alice = await ws_phone(r)
    ok = await alice.register(APNS, f';+sip.instance="<{instance_id()}>"')
    assert ok.status == 200 and "Feature-Caps" in {h[1] for h in ok.headers}
    (binding,) = r.server.registrar.live_bindings(f"sip:alice@{DOMAIN}")
    assert binding.flow.startswith("ws-") and binding.received.startswith("ws:127.0.0.1:")

    bob = await r.phone("bob")  # a UDP phone calls the WebSocket one
    dial = Dialer(bob, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    invite = await next_request(alice, "INVITE")
    assert invite.body == OFFER  # bodies pass untouched
    # two transports, two Record-Routes: each side reaches us over its own
    routes = invite.get_all("Record-Route")
    assert len(routes) == 2 and "transport=ws" in routes[0] and "transport=udp" in routes[1]
    respond(alice, invite, 200, b"v=0\r\n", tag="ws1")
    answer = await dial.final()
    assert answer.status == 200 and answer.body == b"v=0\r\n"
    dial.ack(answer)
    assert (await next_request(alice, "ACK")).method == "ACK"
    bye = asyncio.ensure_future(dial.in_dialog("BYE", answer))
    got = await next_request(alice, "BYE")
    respond(alice, got, 200)
    assert (await bye).status == 200


async def test_closing_the_websocket_drops_the_binding_not_the_device(ws_server: Running) -> None:
    r = ws_server
    alice = await ws_phone(r)
    assert (await alice.register(APNS)).status == 200
    aor = f"sip:alice@{DOMAIN}"
    assert len(r.server.registrar.live_bindings(aor)) == 1
    await alice._ws.close()
    await wait_for(lambda: not r.server.registrar.bindings.get(aor))
    assert [d.voip_token for d in await r.server.registrar.devices_of(aor)] == [VOIP]


async def test_without_the_sip_subprotocol_the_upgrade_is_refused(ws_server: Running) -> None:
    host, port = ws_server.addr("ws")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"ws://{host}:{port}/")
        assert refused.value.status == 400
        async with session.get(f"http://{host}:{port}/") as plain:  # no upgrade at all
            assert plain.status == 400


async def test_bad_sip_gets_400_oversize_closes_1009_and_pings_get_pongs(
    ws_server: Running,
) -> None:
    host, port = ws_server.addr("ws")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"ws://{host}:{port}/", protocols=("sip",), autoping=False)
        assert ws.protocol == "sip"
        await ws.ping(b"hi")
        pong = await ws.receive(timeout=5)
        assert pong.type == aiohttp.WSMsgType.PONG and pong.data == b"hi"
        branch = f"z9hG4bK{secrets.token_hex(6)}"
        await ws.send_str(
            f"OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch={branch}\r\n"
            f"From: <sip:a@{DOMAIN}>;tag=1\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: c1\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: banana\r\n\r\n"
        )
        answer = parse((await ws.receive(timeout=5)).data.encode())
        assert answer.status == 400 and answer.top_via.branch == branch
        await ws.send_str("OPTIONS " + "x" * 70_000)  # over [sip] max_message_size
        closed = await ws.receive(timeout=5)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1009
        await ws.close()
    await wait_for(lambda: not ws_server.server.transport._flows)


async def test_secure_websocket(start_server: ServerFactory, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    r = await start_server(
        sip={"listen": ["udp:127.0.0.1:0", "wss:127.0.0.1:0"], "tls_cert": cert, "tls_key": key}
    )
    host, port = r.addr("wss")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"wss://{host}:{port}/", protocols=("sip",), ssl=False)
        await ws.send_str(
            f"OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bKs1\r\n"
            f"From: <sip:a@{DOMAIN}>;tag=1\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: c2\r\n"
            "CSeq: 1 OPTIONS\r\n\r\n"
        )
        answer = parse((await ws.receive(timeout=5)).data.encode())
        assert answer.status == 200 and answer.top_via.params["received"] == "127.0.0.1"
        await ws.close()


# ------------------------------------------------------------ hostile or dying peers
class RawClient:
    """A WebSocket client at the frame level (wsproto's client side), for what a
    well-behaved library would refuse to send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def connect(cls, host: str, port: int, upgrade: bool = True) -> RawClient:
        client = cls(*await asyncio.open_connection(host, port))
        if upgrade:
            client.writer.write(
                client.ws.send(WsRequest(host=f"{host}:{port}", target="/", subprotocols=["sip"]))
            )
            while not any(isinstance(e, AcceptConnection) for e in await client.events()):
                pass
        return client

    async def events(self) -> list[Any]:
        data = await asyncio.wait_for(self.reader.read(65536), 5)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    def close(self) -> None:
        self.writer.close()


async def test_a_closing_websocket_is_no_flow_at_once(ws_server: Running) -> None:
    """From the moment a close starts, nothing is routed to that WebSocket: a call to
    its user parks and pushes instead of failing on a socket on its way out."""
    r = ws_server
    alice = await ws_phone(r)
    assert (await alice.register(APNS)).status == 200
    (conn,) = r.server.transport._flows.values()
    conn.close()  # our Close frame is out; the socket closes later
    assert r.server.registrar.live_bindings(f"sip:alice@{DOMAIN}") == []  # at once
    conn.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n")  # and a late send is a no-op, no error
    await alice.closed.wait()
    bob = await r.phone("bob")
    dial = Dialer(bob, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    assert (await dial.provisional(180)).status == 180  # parked, alice's device pushed
    dial.cancel()
    assert (await dial.final()).status == 487


async def test_a_dead_flows_traffic_never_goes_to_another_websocket(ws_server: Running) -> None:
    """Behind a proxy every browser comes from the same host, and ports get reused: a
    request for a closed WebSocket is not sent to whoever now has its address."""
    r = ws_server
    host, port = r.addr("ws")
    other = await RawClient.connect(host, port)
    try:
        await wait_for(lambda: bool(r.server.transport._flows))
        (conn,) = r.server.transport._flows.values()
        dead = Peer("ws", conn.peer_host, conn.peer_port, "ws-gone")  # same address
        assert r.server.transport.send_bytes(b"BYE sip:x SIP/2.0\r\n\r\n", dead) is False
        live = Peer("ws", conn.peer_host, conn.peer_port, conn.flow)
        assert r.server.transport.send_bytes(b"\r\n", live) is True
        (text,) = [e for e in await other.events() if isinstance(e, TextMessage)]
        assert text.data == "\r\n"  # the only thing it got is what was meant for it
    finally:
        other.close()


async def test_non_ascii_in_the_upgrade_gets_400(ws_server: Running) -> None:
    reader, writer = await asyncio.open_connection(*ws_server.addr("ws"))
    writer.write(
        b"GET / HTTP/1.1\r\nHost: \xff\xfe.example\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(4096), 5)
    assert answer.startswith(b"HTTP/1.1 400")
    writer.close()


async def test_an_upgrade_never_finished_is_closed(
    ws_server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(websocket, "HANDSHAKE_TIMEOUT", 0.1)
    idle = await RawClient.connect(*ws_server.addr("ws"), upgrade=False)
    assert await asyncio.wait_for(idle.reader.read(), 5) == b""  # closed by the server
    slow = await RawClient.connect(*ws_server.addr("ws"), upgrade=False)
    monkeypatch.setattr(websocket, "HANDSHAKE_TIMEOUT", 60)
    late = await RawClient.connect(*ws_server.addr("ws"), upgrade=False)
    await asyncio.wait_for(ws_server.server.transport.close(), 5)  # shutdown closes it
    assert await asyncio.wait_for(late.reader.read(), 5) == b""
    slow.close()


async def test_a_flood_of_fragments_is_cut_and_crlf_pings_get_pongs(ws_server: Running) -> None:
    client = await RawClient.connect(*ws_server.addr("ws"))
    client.writer.write(client.ws.send(WsMessage(data="\r\n\r\n")))  # SIP.js keep-alive
    (pong,) = [e for e in await client.events() if isinstance(e, TextMessage)]
    assert pong.data == "\r\n"
    for _ in range(websocket.MAX_FRAGMENTS + 1):  # empty frames: no bytes, still work
        client.writer.write(client.ws.send(WsMessage(data="", message_finished=False)))
    closing = [e for e in await client.events() if isinstance(e, CloseConnection)]
    assert closing and closing[0].code == 1008
    client.close()
