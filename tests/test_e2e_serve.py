"""What ships, end to end: the installed `sipwake serve` (console script, as a
subprocess) over UDP, TCP, TLS, WS and WSS, on uvloop ("auto": as installed) and on the default asyncio loop.

Per transport, an iPhone-like app registers with digest and RFC 8599 parameters,
goes to sleep, is called (the call parks and a VoIP push reaches a strict APNs
stand-in over TLS), wakes by registering on a new connection, and answers the call
over that connection; then a MESSAGE to the sleeping app is stored, pushed as an
alert, and delivered when it registers again. The server must exit 0 on SIGTERM
with no traceback in its log.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.helpers.agent import Agent, Dialer, next_request, respond
from tests.helpers.apns_standin import APNsStandIn, Request
from tests.helpers.push import BUNDLE, TEAM_ID
from tests.served import DOMAIN, TRANSPORTS, Served, apns_config, serve

ALERT, VOIP = "a7" * 32, "b7" * 32
# one iPhone, two tokens: PushKit for calls, alerts for messages (liblinphone's form)
PN = f";pn-provider=apns;pn-prid={ALERT}:remote&{VOIP}:voip;pn-param={TEAM_ID}.{BUNDLE}.remote&voip"
INSTANCE = ';+sip.instance="<urn:uuid:6f1c1d2e-2f4a-4a5b-9c3d-0e1f2a3b4c5d>"'
OFFER = b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=alice 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n"


async def phone(served: Served, transport: str, user: str = "alice") -> Agent:
    return await Agent(user, "secret", DOMAIN, served.sip[transport], transport).start()


def push_to(token: str, kind: str) -> object:
    def match(r: Request) -> bool:
        return r.token == token and r.status == 200 and r.payload.get("type") == kind

    return match


async def call_wakes_and_is_answered(served: Served, apns: APNsStandIn, transport: str) -> None:
    # the app uploads its tokens in REGISTER, then the OS kills it (it logs out first)
    app = await phone(served, transport)
    ok = await app.register(PN, INSTANCE)
    assert ok.status == 200, ok.status
    assert ok.get("Feature-Caps") == '*;+sip.pns="apns";+sip.pns="fcm"'
    assert (await app.register(PN, INSTANCE, expires=0)).status == 200
    app.close()

    caller = await phone(served, "udp", "bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    await dial.start_authenticated()
    await dial.provisional(180)  # parked: the caller hears ringing
    (push,) = await apns.wait_request(push_to(VOIP, "call"))
    assert push.headers["apns-push-type"] == "voip"
    assert push.headers["apns-topic"] == f"{BUNDLE}.voip"
    assert push.payload["caller_uri"] == f"sip:bob@{DOMAIN}"
    assert push.payload["pickup_uri"].startswith("sip:")

    # woken by the push, the app registers on a new connection and gets the call there
    woken = await phone(served, transport)
    try:
        assert (await woken.register(PN, INSTANCE)).status == 200
        invite = await next_request(woken, "INVITE")
        assert invite.body == OFFER  # SDP untouched
        assert "pn-" not in invite.uri  # push parameters never leave the server
        respond(woken, invite, 180, tag="woken")
        respond(woken, invite, 200, ANSWER, tag="woken")
        answered = await dial.final()
        assert answered.status == 200 and answered.body == ANSWER
        dial.ack(answered)
        assert (await next_request(woken, "ACK")).call_id == invite.call_id
        bye = asyncio.ensure_future(dial.in_dialog("BYE", answered))
        respond(woken, await next_request(woken, "BYE"), 200)
        assert (await bye).status == 200
        assert (await woken.register(PN, INSTANCE, expires=0)).status == 200
    finally:
        woken.close()
        caller.close()


async def message_waits_for_registration(served: Served, apns: APNsStandIn, transport: str) -> None:
    sender = await phone(served, "udp", "bob")
    text = f"over {transport}: are you there? ✓".encode()
    sent = await sender.request(
        "MESSAGE", f"sip:alice@{DOMAIN}", {"Content-Type": "text/plain"}, text
    )
    assert sent.status == 202  # stored for the sleeping app, not delivered
    (push,) = await apns.wait_request(push_to(ALERT, "message"))
    assert push.headers["apns-push-type"] == "alert"
    assert push.payload["preview"] == text.decode()

    app = await phone(served, transport)
    try:
        assert (await app.register(PN, INSTANCE)).status == 200
        delivered = await next_request(app, "MESSAGE")
        assert delivered.body == text
        respond(app, delivered, 200)
    finally:
        app.close()
        sender.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("loop", ["auto", "asyncio"])
async def test_sleeping_app_is_woken_for_a_call_and_a_message(
    tmp_path: Path, apns: tuple[APNsStandIn, str, str], loop: str, transport: str
) -> None:
    standin, key_file, ca_file = apns
    served = await serve(tmp_path, apns_config(tmp_path, standin, key_file, ca_file), loop=loop)
    try:
        assert set(served.sip) == set(TRANSPORTS)
        await call_wakes_and_is_answered(served, standin, transport)
        await message_waits_for_registration(served, standin, transport)
        assert standin.violations == []
    finally:
        code = await served.stop()
    log = "\n".join(served.log)
    assert code == 0, log
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "sipwake stopped" in log
