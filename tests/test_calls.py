"""Calls end to end: fork, park + push, fork-late, pickup, missed, decline, limits."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import aiohttp
import pytest

from sipwake.sip.message import Message
from tests.helpers.agent import Agent, Dialer, next_request, respond
from tests.helpers.api import basic
from tests.helpers.calls import (
    FCM,
    OFFER,
    TRUSTED,
    call_fields,
    sink_of,
    sleeping_ios,
    wait_push,
    wake,
)
from tests.helpers.node import DOMAIN, Running, ServerFactory
from tests.helpers.wait import wait_for

ANSWER = b"v=0\r\no=callee 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\na=candidate:1 1 UDP 2130706431 127.0.0.1 50000 typ host\r\n"


def pushes(r: Running, kind: str | None = None) -> list[dict[str, Any]]:
    sink = r.server.push.sink
    assert sink is not None
    found = [p for p in reversed(sink.pushes()) if kind is None or p["payload_type"] == kind]
    return found


async def test_registered_callee_fork_first_answer_wins(calls: Running) -> None:
    p1 = await calls.phone("alice")
    p2 = await calls.phone("alice", transport="tcp")
    assert (await p1.register()).status == 200
    assert (await p2.register(params=";x=2")).status == 200
    caller = await calls.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    inv1 = await next_request(p1, "INVITE")
    inv2 = await next_request(p2, "INVITE")
    assert inv1.body == OFFER and inv2.body == OFFER  # SDP untouched
    assert inv1.get("Record-Route") and "pn-" not in inv1.uri
    respond(p1, inv1, 180, tag="t1")
    respond(p2, inv2, 180, tag="t2")
    await dial.provisional(180)
    respond(p1, inv1, 200, ANSWER, tag="t1")
    ok = await dial.final()
    assert ok.status == 200 and ok.body == ANSWER and ok.to_tag == "t1"
    cancel = await next_request(p2, "CANCEL")
    assert cancel.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    respond(p2, cancel, 200)
    respond(p2, inv2, 487, tag="t2")
    dial.ack(ok)
    ack = await next_request(p1, "ACK")
    assert ack.call_id == inv1.call_id
    # re-INVITE (an ICE restart) passes with its body, then BYE ends the dialog
    reinvite = asyncio.ensure_future(dial.in_dialog("INVITE", ok, OFFER + b"a=ice-restart\r\n"))
    re1 = await next_request(p1, "INVITE")
    assert re1.body == OFFER + b"a=ice-restart\r\n"
    respond(p1, re1, 200, ANSWER, tag="t1")
    assert (await reinvite).status == 200
    bye = asyncio.ensure_future(dial.in_dialog("BYE", ok))
    respond(p1, await next_request(p1, "BYE"), 200)
    assert (await bye).status == 200
    await wait_for(lambda: calls.server.calls.counts()["dialogs"] == 0)
    await calls.server.calls.logged()
    (record,) = await calls.server.store.calls(f"sip:alice@{DOMAIN}")
    assert record.answered and not record.missed


async def test_parked_call_push_then_register_gets_invite(calls: Running) -> None:
    phone = await sleeping_ios(calls)
    caller = await calls.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER, {"From": f'"Bob B" <sip:bob@{DOMAIN}>;tag=bobtag'})
    dial.start()
    assert (await dial.provisional(180)).to_tag  # parked: ringback at once
    (push,) = await wait_push(calls, "call")
    assert push["headers"]["apns-push-type"] == "voip"
    assert push["headers"]["apns-topic"] == "com.example.dialer.voip"
    fields = call_fields(push)
    assert fields["caller_number"] == "bob" and fields["caller_name"] == "Bob B"
    (device,) = await calls.server.store.devices(f"sip:alice@{DOMAIN}")
    assert fields["pickup_uri"] == f"sip:pickup-{fields['call_id']}.{device.device_id}@{DOMAIN}"
    assert fields["caller_uri"] == f"sip:bob@{DOMAIN}"
    # the app wakes and registers: the parked INVITE comes to it, without push params
    await wake(calls, phone)
    invite = await next_request(phone, "INVITE")
    assert invite.body == OFFER and "pn-" not in invite.uri and "pn-" not in invite.to_bytes().decode()
    respond(phone, invite, 200, ANSWER, tag="dev")
    ok = await dial.final()
    assert ok.status == 200 and ok.body == ANSWER
    dial.ack(ok)
    await next_request(phone, "ACK")
    assert not sink_of(calls, "call_cancelled")  # the answering device is not told to stop
    # re-registering again does not bring the INVITE a second time
    await wake(calls, phone)
    assert phone.requests.empty()


async def test_register_twice_during_park_forks_once(calls: Running) -> None:
    phone = await sleeping_ios(calls)
    caller = await calls.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    await dial.provisional(180)
    await wait_push(calls, "call")
    await wake(calls, phone)
    await wake(calls, phone)
    invite = await phone.requests.get()
    assert invite.method == "INVITE"
    respond(phone, invite, 180, tag="dev")  # a CANCEL may only follow a provisional
    dial.cancel()
    # everything else the phone got up to the CANCEL: no second INVITE
    cancel = await phone.requests.get()
    assert cancel.method == "CANCEL"
    respond(phone, cancel, 200)
    respond(phone, invite, 487, tag="dev")
    assert (await dial.final()).status == 487


async def test_no_device_480_and_unknown_404(calls: Running) -> None:
    caller = await calls.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    final = await dial.final()
    assert final.status == 480 and final.to_tag  # our own answer, as a UAS: To tag
    dial = Dialer(caller, f"sip:nobody@{DOMAIN}", OFFER)
    dial.start()
    final = await dial.final()
    assert final.status == 404 and final.to_tag


async def test_caller_cancel_is_a_missed_call(calls: Running) -> None:
    await sleeping_ios(calls, params=FCM)
    caller = await calls.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    await dial.provisional(180)
    (push,) = await wait_push(calls, "call")
    android = push["payload"]
    assert android["android"]["priority"] == "HIGH"
    assert all(isinstance(v, str) for v in android["data"].values())
    dial.cancel()
    assert (await dial.final()).status == 487
    (missed,) = await wait_push(calls, "missed_call")
    assert call_fields(missed)["call_id"] == call_fields(push)["call_id"]
    await wait_for(lambda: calls.server.calls.counts()["ringing"] == 0)
    # no waiting for the call log's batch: the app asking right after the push finds it
    async with aiohttp.ClientSession() as http:
        auth = basic("alice")
        url = f"http://127.0.0.1:{calls.server.http.port}/v1/calls?missed=1"  # type: ignore[union-attr]
        async with http.get(url, headers=auth) as resp:
            assert resp.status == 200
            (entry,) = (await resp.json())["calls"]
    assert entry["caller_number"] == "bob" and entry["missed"] and not entry["answered"]


async def test_park_timeout_480_and_late_ios_gets_invite_then_cancel(
    start_server: ServerFactory,
) -> None:
    r = await start_server(sip=TRUSTED, calls={"park_timeout": 0.5})
    await r.add_user("alice")
    phone = await sleeping_ios(r)
    caller = await r.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    assert (await dial.final()).status == 480
    await wait_for(lambda: r.server.calls.counts()["ringing"] == 0)
    # a VoIP-only token can't take alert pushes (Apple rejects them): the missed call
    # is in the log, and reaches the phone as INVITE + CANCEL when it registers
    assert not sink_of(r, "missed_call")
    await r.server.calls.logged()
    (record,) = await r.server.store.calls(f"sip:alice@{DOMAIN}", missed_only=True)
    assert record.reason == "timeout"
    # CallKit rang for the VoIP push: when the app registers it gets INVITE + CANCEL
    await wake(r, phone)
    invite = await next_request(phone, "INVITE")
    respond(phone, invite, 180, tag="late")
    cancel = await next_request(phone, "CANCEL")
    assert "cause=487" in (cancel.get("Reason") or "")
    respond(phone, cancel, 200)
    respond(phone, invite, 487, tag="late")
    assert not r.server.calls.late_by_device  # once per device
    await wait_for(lambda: not any(r.server.calls.counts().values()))


async def test_explicit_pickup_bridges_both_dialogs(calls: Running) -> None:
    phone = await sleeping_ios(calls)
    caller = await calls.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    await dial.provisional(180)
    fields = call_fields((await wait_push(calls, "call"))[0])
    # the app picks up over HTTP-woken SIP: INVITE to pickup_uri without SDP, as alice
    pickup = Dialer(phone, fields["pickup_uri"])
    pickup.start()
    challenge = await pickup.final()
    assert challenge.status == 407
    from tests.helpers.agent import digest_header

    auth = digest_header(challenge.get("Proxy-Authenticate") or "", "INVITE", fields["pickup_uri"], "alice", "secret")
    host, port = phone.local
    contact = f'<sip:alice@{host}:{port};transport=udp>;+sip.instance="<{phone.instance}>"'  # type: ignore[attr-defined]
    pickup = Dialer(phone, fields["pickup_uri"], headers={"Proxy-Authorization": auth, "Contact": contact})
    pickup.start()
    ok = await pickup.final()
    assert ok.status == 200 and ok.body == OFFER  # the caller's offer, byte for byte
    # the device that picked up is known by its instance: no late INVITE + CANCEL for it
    assert not calls.server.calls.late_by_device
    # the answer goes in the ACK, and on to the caller in its 200
    pickup_ack_with_answer(phone, pickup, ok)
    caller_ok = await dial.final()
    assert caller_ok.status == 200 and caller_ok.body == ANSWER
    dial.ack(caller_ok)
    # a re-INVITE from the device (ICE restart) reaches the caller with its body
    caller = dial.agent
    reinvite = asyncio.ensure_future(pickup.in_dialog("INVITE", ok, ANSWER + b"a=ice-restart\r\n"))
    at_caller = await next_request(caller, "INVITE")
    assert at_caller.body == ANSWER + b"a=ice-restart\r\n"
    assert at_caller.call_id == caller_ok.call_id and at_caller.to_tag == dial_from_tag(dial)
    respond(caller, at_caller, 200, OFFER + b"a=ice-restart\r\n")
    re_ok = await reinvite
    assert re_ok.status == 200 and re_ok.body == OFFER + b"a=ice-restart\r\n"
    # BYE from the caller reaches the device over the bridge
    bye = asyncio.ensure_future(dial.in_dialog("BYE", caller_ok))
    device_bye = await next_request(phone, "BYE")
    assert device_bye.call_id == ok.call_id
    respond(phone, device_bye, 200)
    assert (await bye).status == 200
    await wait_for(lambda: calls.server.calls.counts()["dialogs"] == 0)


def dial_from_tag(dial: Dialer) -> str:
    return dial.agent.tag


def pickup_ack_with_answer(phone: Agent, dial: Dialer, ok: Message) -> None:
    host, port = phone.local
    lines = [
        f"ACK {ok.contacts[0].uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKack{dial.cseq};rport",
        "Max-Forwards: 70",
        f"From: {ok.get('From')}",
        f"To: {ok.get('To')}",
        f"Call-ID: {ok.call_id}",
        f"CSeq: {dial.cseq} ACK",
        "Content-Type: application/sdp",
        f"Content-Length: {len(ANSWER)}",
    ]
    phone.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode() + ANSWER)


@pytest.mark.parametrize("named", [True, False], ids=["device-uri", "bare-uri"])
async def test_a_phone_that_picked_up_gets_no_ghost_call_when_it_registers(
    calls: Running, named: bool
) -> None:
    """pjsua2 picks up without a +sip.instance in its Contact; it once got INVITE +
    CANCEL for that same call when it registered again (a ghost CallKit call)."""
    phone = await sleeping_ios(calls)
    caller = await calls.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    await dial.provisional(180)
    fields = call_fields((await wait_push(calls, "call"))[0])
    uri = fields["pickup_uri"] if named else f"sip:pickup-{fields['call_id']}@{DOMAIN}"
    host, port = phone.local
    pickup = Dialer(phone, uri, headers={"Contact": f"<sip:alice@{host}:{port}>"})
    await pickup.start_authenticated()
    ok = await pickup.final()
    assert ok.status == 200 and ok.body == OFFER
    pickup_ack_with_answer(phone, pickup, ok)
    assert (await dial.final()).status == 200
    assert not calls.server.calls.late_by_device
    await wake(calls, phone)
    # anything sent on the REGISTER would have come before this answer
    assert (await phone.request("OPTIONS", f"sip:{DOMAIN}")).status == 200
    assert phone.requests.empty()


async def test_credentials_never_reach_the_callee(start_server: ServerFactory) -> None:
    r = await start_server(calls={"park_timeout": 5})  # no trusted peers: bob authenticates
    await r.add_user("alice")
    await r.add_user("bob")
    alice = await r.phone("alice")
    assert (await alice.register()).status == 200
    dial = Dialer(await r.phone("bob"), f"sip:alice@{DOMAIN}", OFFER)
    await dial.start_authenticated()
    invite = await next_request(alice, "INVITE")
    assert "Proxy-Authorization" in dial.headers  # it was sent to us
    assert invite.get("Proxy-Authorization") is None and invite.get("Authorization") is None
    respond(alice, invite, 486, tag="busy")
    assert (await dial.final()).status == 486


async def test_pickup_refusals(calls: Running) -> None:
    await sleeping_ios(calls)
    caller = await calls.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    await dial.provisional(180)
    fields = call_fields((await wait_push(calls, "call"))[0])
    # bob (trusted source, but a pickup always authenticates) may not take alice's call
    intruder = await calls.phone("bob")
    resp = await intruder.request("INVITE", fields["pickup_uri"], {"Contact": "<sip:bob@127.0.0.1>"})
    assert resp.status == 403 and resp.to_tag
    resp = await intruder.request("INVITE", f"sip:pickup-nope@{DOMAIN}", {"Contact": "<sip:bob@127.0.0.1>"})
    assert resp.status == 481 and resp.to_tag
    dial.cancel()
    assert (await dial.final()).status == 487


async def test_decline_over_http(calls: Running) -> None:
    await sleeping_ios(calls)
    await sleeping_ios(calls, params=FCM)
    caller = await calls.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    await dial.provisional(180)
    call_id = call_fields((await wait_push(calls, "call", 2))[0])["call_id"]
    base = f"http://127.0.0.1:{calls.server.http.port}"  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        bob = basic("bob")
        async with http.post(f"{base}/v1/calls/{call_id}/decline", headers=bob) as resp:
            assert resp.status == 404  # not bob's call
        alice = basic("alice")
        async with http.post(f"{base}/v1/calls/{call_id}/decline", headers=alice) as resp:
            assert resp.status == 200
    assert (await dial.final()).status == 603
    # the Android device is told to stop ringing; the VoIP-only iPhone can't take an
    # alert push and hears of it as INVITE + CANCEL when it registers
    (stop,) = await wait_push(calls, "call_cancelled")
    assert stop["provider"] == "fcm" and call_fields(stop)["reason"] == "declined"
    assert not sink_of(calls, "missed_call")


async def test_alert_mode_repeats_while_parked(start_server: ServerFactory) -> None:
    r = await start_server(sip=TRUSTED, calls={"park_timeout": 5, "alert_repeat": 0.2})
    await r.add_user("alice")
    alert = ";pn-provider=apns;pn-prid=" + "b2" * 32 + ";pn-param=ABCD123456.com.example.dialer.apns"
    await sleeping_ios(r, params=alert)
    caller = await r.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    await dial.provisional(180)
    repeated = await wait_push(r, "call", 3)
    assert {p["headers"]["apns-push-type"] for p in repeated} == {"alert"}
    assert len({p["headers"]["apns-collapse-id"] for p in repeated}) == 1
    dial.cancel()
    assert (await dial.final()).status == 487
    count = len(sink_of(r, "call"))
    await asyncio.sleep(0.5)  # no more repeats once the call is over
    assert len(sink_of(r, "call")) == count


async def test_local_caller_is_challenged(start_server: ServerFactory) -> None:
    r = await start_server(calls={"park_timeout": 5})
    await r.add_user("alice")
    await r.add_user("bob")
    caller = await r.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    assert (await dial.final()).status == 407
    # authenticated as bob, From says alice: refused the way the inbox refuses a MESSAGE
    spoof = Agent("alice", "secret", DOMAIN, r.addr(), auth_user="bob")
    await spoof.start()
    r.agents.append(spoof)
    resp = await spoof.request("INVITE", f"sip:bob@{DOMAIN}", {"Contact": spoof.contact()}, OFFER)
    assert resp.status == 403 and resp.reason == "Forbidden (From is not you)" and resp.to_tag
    assert r.server.calls.counts()["ringing"] == 0


async def test_limits_and_loops(start_server: ServerFactory) -> None:
    r = await start_server(sip=TRUSTED, calls={"park_timeout": 5, "max_parked_per_user": 1})
    await r.add_user("alice")
    await sleeping_ios(r)
    caller = await r.phone("bob")
    first = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    first.start()
    await first.provisional(180)
    second = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    second.start()
    final = await second.final()
    assert final.status == 486 and final.to_tag
    host, port = r.addr("udp")
    looped = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER, {"Via": f"SIP/2.0/UDP {host}:{port};branch=z9hG4bKloop"})
    looped.start()
    assert (await looped.final()).status == 482
    hops = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER, {"Max-Forwards": "0"})
    hops.start()
    assert (await hops.final()).status == 483
    first.cancel()
    assert (await first.final()).status == 487
    await wait_for(lambda: r.server.calls.counts()["ringing"] == 0)


async def test_latency_metrics_and_stats(calls: Running) -> None:
    phone = await sleeping_ios(calls)
    dial = Dialer(await calls.phone("bob"), f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    await dial.provisional(180)
    await wait_push(calls, "call")
    await wake(calls, phone)
    invite = await next_request(phone, "INVITE")
    respond(phone, invite, 486, tag="dev")
    metrics = calls.server.metrics
    await wait_for(lambda: metrics.call_push.summary()["count"] == 1)
    assert metrics.register_invite.summary()["count"] == 1
    assert 0 < metrics.register_invite.summary()["p50_ms"] < 1000
    base = f"http://127.0.0.1:{calls.server.http.port}"  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
        assert "sipwake_call_push_seconds_count 1.0" in text
        async with http.get(f"{base}/v1/admin/stats") as resp:
            assert resp.status == 401  # service token required
    dial.cancel()
    assert (await dial.final()).status == 487


def test_dialogs_without_bye_are_swept() -> None:
    from sipwake.calls.dialogs import Dialogs, ProxyDialog
    from sipwake.router import Router
    from sipwake.sip.peer import Peer
    from sipwake.sip.transaction import TransactionLayer
    from sipwake.sip.uac import Uac
    from sipwake.testing import ManualScheduler

    clock = ManualScheduler()
    sent: list[object] = []
    layer = TransactionLayer(lambda msg, peer: sent.append(msg) or True, Router(), clock)
    uac = Uac(lambda transport: ("127.0.0.1", 5060), layer, layer._send)
    dialogs = Dialogs(uac, clock.time)
    peer = Peer("udp", "127.0.0.1", 9)
    dialogs.add_proxy(ProxyDialog("old", "a", "b", peer, peer))
    clock.advance(7200)  # two hours without a BYE
    dialogs.add_proxy(ProxyDialog("new", "a", "b", peer, peer))
    assert dialogs.sweep(3600) == 1
    assert list(dialogs.by_call_id) == ["new"]
    assert sent == []  # forgetting a dialog sends nothing


async def test_advertised_host_in_our_headers_and_recognised_as_us(
    start_server: ServerFactory,
) -> None:
    """Listening on a wildcard or behind NAT, [sip] advertise is the host phones reach
    us at: it is in our Via and Record-Route, and Routes or Request-URIs naming it are
    ours (popped, not forwarded; a call to user@that-host is a call to our user)."""
    r = await start_server(sip={**TRUSTED, "advertise": "sip.test.invalid"})
    await r.add_user("alice")
    phone = await r.phone("alice")
    assert (await phone.register()).status == 200
    _, port = r.addr("udp")
    caller = await r.phone("bob")
    dial = Dialer(caller, f"sip:alice@sip.test.invalid:{port}", OFFER)  # our host, not domain
    dial.start()
    invite = await next_request(phone, "INVITE")
    assert invite.top_via.host == "sip.test.invalid" and invite.top_via.port == port
    assert invite.get_all("Record-Route") == [f"<sip:sip.test.invalid:{port};transport=udp;lr>"]
    respond(phone, invite, 200, ANSWER, tag="t1")
    ok = await dial.final()
    dial.ack(ok)
    await next_request(phone, "ACK")
    bye = asyncio.ensure_future(dial.in_dialog("BYE", ok))  # Route: <sip:sip.test.invalid…>
    got = await next_request(phone, "BYE")
    assert got.get_all("Route") == []  # recognised as ours and removed
    respond(phone, got, 200)
    assert (await bye).status == 200


async def test_ended_calls_leave_no_cyclic_garbage(start_server: ServerFactory) -> None:
    """A call's state is freed by reference counting once its transactions and its
    park memory are done: full collections are rare (collector.py), so a cycle per
    call would be ~70 objects of garbage per call until the next one."""
    quick = {**TRUSTED, "t1": 0.01, "t2": 0.04, "t4": 0.05}  # 64*T1 = 0.64 s
    r = await start_server(sip=quick, calls={"park_timeout": 0.5, "alert_repeat": 15})
    await r.add_user("alice")
    await r.add_user("bob")
    phone = await sleeping_ios(r)
    caller = await r.phone("bob")
    # parked (push, the phone wakes and answers), then proxied (the phone is registered)
    for parked in (True, False):
        dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
        dial.start()
        if parked:
            await wait_push(r, "call")
            await wake(r, phone)
        invite = await next_request(phone, "INVITE")
        respond(phone, invite, 180, tag="dev")
        respond(phone, invite, 200, ANSWER, tag="dev")
        ok = await dial.final()
        dial.ack(ok)
        await next_request(phone, "ACK")
        bye = asyncio.ensure_future(dial.in_dialog("BYE", ok))
        respond(phone, await next_request(phone, "BYE"), 200)
        assert (await bye).status == 200
    await wait_for(lambda: r.server.transactions.counts()["client"] == 0
                   and r.server.transactions.counts()["server"] == 0
                   and r.server.calls.counts()["ended"] == 0, timeout=10)  # fmt: skip
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        ours = [type(o).__qualname__ for o in gc.garbage
                if type(o).__module__.startswith("sipwake")]  # fmt: skip
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert ours == []
