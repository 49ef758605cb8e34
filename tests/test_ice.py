"""ICE really works after a push pickup: real aioice agents on both ends put their
candidates in the SDP, the call is set up through sipwake (fork-late and explicit
pickup), then they run connectivity checks and exchange a datagram."""

from __future__ import annotations

import asyncio
from typing import Any

import aioice
import aioice.ice
import pytest

from sipwake.sip.message import Message
from tests.helpers.agent import Dialer, digest_header, next_request, respond
from tests.helpers.calls import call_fields, sleeping_ios, wait_push, wake
from tests.helpers.node import DOMAIN, Running


@pytest.fixture(autouse=True)
def loopback_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice skips 127.0.0.1; network tests stay on the loopback
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


async def ice_agent(controlling: bool) -> tuple[aioice.Connection, bytes]:
    conn = aioice.Connection(ice_controlling=controlling, components=1, use_ipv6=False)
    await conn.gather_candidates()
    lines = [
        "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
        "m=application 9 UDP 0",
        f"a=ice-ufrag:{conn.local_username}", f"a=ice-pwd:{conn.local_password}",
        *(f"a=candidate:{c.to_sdp()}" for c in conn.local_candidates),
        "a=end-of-candidates",
    ]  # fmt: skip
    return conn, ("\r\n".join(lines) + "\r\n").encode()


async def use_remote(conn: aioice.Connection, sdp: bytes) -> None:
    for line in sdp.decode().splitlines():
        if line.startswith("a=ice-ufrag:"):
            conn.remote_username = line.split(":", 1)[1]
        elif line.startswith("a=ice-pwd:"):
            conn.remote_password = line.split(":", 1)[1]
        elif line.startswith("a=candidate:"):
            await conn.add_remote_candidate(aioice.Candidate.from_sdp(line[len("a=candidate:") :]))
    await conn.add_remote_candidate(None)


async def connect_and_exchange(a: aioice.Connection, b: aioice.Connection) -> None:
    async with asyncio.timeout(10):
        await asyncio.gather(a.connect(), b.connect())
        await a.sendto(b"hello through ICE", 1)
        data, component = await b.recvfrom()
        await b.sendto(b"and back", 1)
        back, _ = await a.recvfrom()
    assert data == b"hello through ICE" and component == 1 and back == b"and back"


async def test_ice_after_fork_late(calls: Running) -> None:
    phone = await sleeping_ios(calls)
    caller_ice, offer = await ice_agent(controlling=True)
    dial = Dialer(await calls.phone("bob"), f"sip:alice@{DOMAIN}", offer)
    dial.start()
    await dial.provisional(180)
    await wait_push(calls, "call")
    await wake(calls, phone)
    invite = await next_request(phone, "INVITE")
    callee_ice, answer = await ice_agent(controlling=False)
    await use_remote(callee_ice, invite.body)
    respond(phone, invite, 200, answer, tag="dev")
    ok = await dial.final()
    dial.ack(ok)
    await use_remote(caller_ice, ok.body)
    try:
        await connect_and_exchange(caller_ice, callee_ice)
    finally:
        await asyncio.gather(caller_ice.close(), callee_ice.close())


async def test_ice_after_explicit_pickup(calls: Running) -> None:
    phone = await sleeping_ios(calls)
    caller_ice, offer = await ice_agent(controlling=True)
    dial = Dialer(await calls.phone("bob"), f"sip:alice@{DOMAIN}", offer)
    dial.start()
    await dial.provisional(180)
    pickup_uri = call_fields((await wait_push(calls, "call"))[0])["pickup_uri"]
    first = Dialer(phone, pickup_uri)
    first.start()
    challenge = await first.final()
    auth = digest_header(challenge.get("Proxy-Authenticate") or "", "INVITE", pickup_uri, "alice", "secret")
    pickup = Dialer(phone, pickup_uri, headers={"Proxy-Authorization": auth})
    pickup.start()
    ok = await pickup.final()
    callee_ice, answer = await ice_agent(controlling=False)
    await use_remote(callee_ice, ok.body)
    send_ack(phone, pickup, ok, answer)
    caller_ok = await dial.final()
    dial.ack(caller_ok)
    await use_remote(caller_ice, caller_ok.body)
    try:
        await connect_and_exchange(caller_ice, callee_ice)
    finally:
        await asyncio.gather(caller_ice.close(), callee_ice.close())


def send_ack(phone: Any, dial: Dialer, ok: Message, body: bytes) -> None:
    host, port = phone.local
    lines = [
        f"ACK {ok.contacts[0].uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKice{dial.cseq};rport",
        "Max-Forwards: 70",
        f"From: {ok.get('From')}",
        f"To: {ok.get('To')}",
        f"Call-ID: {ok.call_id}",
        f"CSeq: {dial.cseq} ACK",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
    ]
    phone.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
