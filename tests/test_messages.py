"""The inbox over SIP: MESSAGE to sleeping and awake users, delivery on registration,
de-duplication, limits, pushes."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import secrets
import time
import zlib
from typing import Any

from sipwake.store.models import Device, InboxMessage, Mailbox
from tests.helpers.agent import Agent, respond
from tests.helpers.messaging import BOB, TEXT, Handset, cpim, send, setup
from tests.helpers.node import DOMAIN, Running, ServerFactory, instance_id

ALICE = f"sip:alice@{DOMAIN}"


async def register(r: Running, user: str, instance: str, status: int = 200) -> Handset:
    phone = await r.phone(user)
    handset = Handset(phone, status)
    resp = await phone.register(header_params=f';+sip.instance="<{instance}>"')
    assert resp.status == 200
    return handset


async def sleeping_device(r: Running, aor: str = BOB, provider: str = "apns") -> Device:
    """A push device whose app is not running (no binding)."""
    token = secrets.token_hex(32) if provider == "apns" else f"fcm-{secrets.token_hex(8)}"
    device = Device(
        device_id=f"dev-{secrets.token_hex(4)}", aor=aor, provider=provider,
        platform="ios" if provider == "apns" else "android", push_token=token,
        topic="com.example.dialer" if provider == "apns" else "sipwake-test",
    )
    await r.server.store.put_device(device)
    return device


def sink_pushes(r: Running, kind: str = "message") -> list[dict[str, Any]]:
    sink = r.server.push.sink
    assert sink is not None
    return [p for p in sink.pushes() if p["type"] == kind]


async def stored(r: Running, aor: str = BOB) -> list[InboxMessage]:
    return await r.server.store.messages(aor, 0, 10_000)


# ------------------------------------------------------------------ offline
async def test_message_badge_counts_new_voicemails_too(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server, push_interval=1.0)
    await sleeping_device(r)
    await r.server.store.put_mailbox(Mailbox(BOB, waiting=True, new_count=2, old_count=5))
    assert (await send(alice, "bob", b"hi")).status == 202
    await r.server.inbox.pushes.idle(BOB)
    (push,) = sink_pushes(r)
    assert push["payload"]["unread"] == 1 and push["payload"]["aps"]["badge"] == 3


async def test_offline_user_gets_202_a_push_and_everything_in_order_on_register(
    start_server: ServerFactory,
) -> None:
    r, alice = await setup(start_server, push_interval=1.0)
    device = await sleeping_device(r)
    bodies = [f"message {i} ✓".encode() for i in range(5)]
    bodies.append(cpim("héllo 👋", "imdn-1"))
    for i, body in enumerate(bodies):
        ctype = "message/cpim" if i == 5 else TEXT
        resp = await send(alice, "bob", body, ctype)
        assert resp.status == 202  # committed before the answer
        assert len(await stored(r)) == i + 1
    await r.server.inbox.pushes.idle(BOB)
    pushes = sink_pushes(r)
    assert 1 <= len(pushes) <= 2  # the burst is coalesced
    first, last = pushes[-1]["payload"], pushes[0]["payload"]  # newest first
    assert first["type"] == "message" and first["from_uri"] == ALICE
    assert last["preview"] == "héllo 👋" and last["from_name"] == "Alice A."
    assert last["unread"] == 6 and last["aps"]["badge"] == 6
    assert pushes[0]["device_id"] == device.device_id

    phone = await register(r, "bob", instance_id())
    got = await phone.wait_for(6)
    assert [m.body for m in got] == bodies  # byte-identical, in the order received
    assert [m.get("Content-Type") for m in got] == [TEXT] * 5 + ["message/cpim"]
    assert got[0].from_.uri.aor() == ALICE and "Date" in {h[1] for h in got[0].headers}
    assert "pn-" not in got[0].uri
    await wait_marked(r, BOB, 6)
    assert await r.server.store.unread_count(BOB) == 0


async def wait_marked(r: Running, aor: str, count: int) -> None:
    """Until deliveries are over, then `count` messages of `aor` are marked delivered."""
    async with asyncio.timeout(5):
        await r.server.inbox.courier.idle()
    assert sum(1 for m in await stored(r, aor) if m.delivered_at) == count


async def test_each_device_gets_each_message_once(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server)
    for i in range(3):
        assert (await send(alice, "bob", f"m{i}".encode())).status == 202
    phone_id, tablet_id = instance_id(), instance_id()
    phone = await register(r, "bob", phone_id)
    await phone.wait_for(3)
    await wait_marked(r, BOB, 3)
    # a REGISTER refresh from the same phone delivers nothing again
    assert (await phone.agent.register(header_params=f';+sip.instance="<{phone_id}>"')).status == 200
    tablet = await register(r, "bob", tablet_id)  # another device still gets all three
    assert [m.body for m in await tablet.wait_for(3)] == [b"m0", b"m1", b"m2"]
    await r.server.inbox.courier.idle()
    assert len(phone.got) == 3 and len(tablet.got) == 3


async def test_concurrent_registrations_deliver_once(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server)
    for i in range(20):
        await send(alice, "bob", f"m{i}".encode())
    instance = instance_id()
    phone = await r.phone("bob")
    handset = Handset(phone)
    params = f';+sip.instance="<{instance}>"'
    # three REGISTERs in quick succession (refreshes): one delivery run
    results = await asyncio.gather(*(phone.register(header_params=params) for _ in range(3)))
    assert all(resp.status == 200 for resp in results)
    await handset.wait_for(20)
    await wait_marked(r, BOB, 20)
    await r.server.inbox.courier.idle()
    assert [m.body for m in handset.got] == [f"m{i}".encode() for i in range(20)]


async def test_failed_delivery_is_kept_for_the_next_registration(
    start_server: ServerFactory,
) -> None:
    r, alice = await setup(start_server)
    await send(alice, "bob", b"one")
    await send(alice, "bob", b"two")
    instance = instance_id()
    busy = await register(r, "bob", instance, status=480)
    await busy.wait_for(1)  # refused ("unavailable"): the lane stops, nothing is lost
    await r.server.inbox.courier.idle()
    assert await r.server.store.unread_count(BOB) == 2
    busy.stop()
    busy.agent.close()
    ok = await register(r, "bob", instance)  # the app is back: same device, new address
    assert [m.body for m in await ok.wait_for(2)] == [b"one", b"two"]


async def test_a_message_refused_for_good_does_not_block_the_rest(
    start_server: ServerFactory,
) -> None:
    r, alice = await setup(start_server)
    await send(alice, "bob", b"<odd/>", "application/x-odd")
    await send(alice, "bob", b"fine")
    instance = instance_id()
    phone = await r.phone("bob")
    got: list[bytes] = []

    async def answer() -> None:  # this app cannot take application/x-odd
        while True:
            req = await phone.requests.get()
            odd = req.get("Content-Type") == "application/x-odd"
            respond(phone, req, 415 if odd else 200)
            if req.method == "MESSAGE":
                got.append(req.body)

    task = asyncio.ensure_future(answer())
    try:
        params = f';+sip.instance="<{instance}>"'
        assert (await phone.register(header_params=params)).status == 200
        async with asyncio.timeout(5):
            while len(got) < 2:  # noqa: ASYNC110 - the phone's own list
                await asyncio.sleep(0.01)
        await r.server.inbox.courier.idle()
        assert got == [b"<odd/>", b"fine"]
        # refused once for good: not offered to this device again; it stays unread
        assert (await phone.register(header_params=params)).status == 200
        await r.server.inbox.courier.idle()
        assert got == [b"<odd/>", b"fine"]
        assert await r.server.store.unread_count(BOB) == 1
    finally:
        task.cancel()


# ------------------------------------------------------------------- online
async def test_live_binding_gets_it_at_once_and_the_sender_200(
    start_server: ServerFactory,
) -> None:
    r, alice = await setup(start_server)
    await sleeping_device(r)
    phone = await register(r, "bob", instance_id())
    resp = await send(alice, "bob", cpim("hi there", "id-9"), "message/cpim")
    assert resp.status == 200
    (got,) = await phone.wait_for(1)
    assert got.body == cpim("hi there", "id-9")
    await wait_marked(r, BOB, 1)
    await r.server.inbox.pushes.idle(BOB)
    assert sink_pushes(r) == []  # delivered: no push


async def test_unanswering_binding_means_202_and_a_push(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server, forward_timeout=0.3)
    await sleeping_device(r)
    phone = await r.phone("bob")  # registered, then silent (app frozen, NAT gone)
    assert (await phone.register(header_params=f';+sip.instance="<{instance_id()}>"')).status == 200
    started = time.monotonic()
    resp = await send(alice, "bob", b"are you there?")
    assert resp.status == 202 and time.monotonic() - started >= 0.3
    await r.server.inbox.pushes.idle(BOB)
    (push,) = sink_pushes(r)
    assert push["payload"]["preview"] == "are you there?"
    assert (await stored(r))[0].delivered_at == 0


# ------------------------------------------------------- dedup and identity
async def test_imdn_resend_is_stored_once_and_answered_alike(
    start_server: ServerFactory,
) -> None:
    r, alice = await setup(start_server)
    body = cpim("once", "dup-1")
    assert (await send(alice, "bob", body, "message/cpim")).status == 202
    assert (await send(alice, "bob", body, "message/cpim")).status == 202  # new Call-ID/CSeq
    # without an IMDN id, the same Call-ID and CSeq is the same message
    plain = {"CSeq": "77 MESSAGE"}
    assert (await send(alice, "bob", b"plain", TEXT, **plain)).status == 202
    assert (await send(alice, "bob", b"plain", TEXT, **plain)).status == 202
    assert [m.body for m in await stored(r)] == [body, b"plain"]
    phone = await register(r, "bob", instance_id())
    await phone.wait_for(2)
    await wait_marked(r, BOB, 2)
    # once delivered, a resend is answered 200, still not stored again
    assert (await send(alice, "bob", body, "message/cpim")).status == 200
    assert len(await stored(r)) == 2


async def test_who_may_send(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server)
    # the digest challenge is a 407 (proxy authentication)
    data, branch = alice.build("MESSAGE", f"sip:bob@{DOMAIN}", {"Content-Type": TEXT}, b"x")
    assert (await alice._transact(data, branch, 5)).status == 407
    # authenticated as alice, but From says carol
    spoof = Agent("carol", "secret", DOMAIN, r.addr(), auth_user="alice")
    await spoof.start()
    r.agents.append(spoof)
    resp = await send(spoof, "bob", b"x")
    assert resp.status == 403 and resp.reason == "Forbidden (From is not you)" and resp.to_tag
    # another domain, not a trusted peer
    resp = await send(alice, "bob", b"x", From=f"<sip:eve@elsewhere.example>;tag={alice.tag}")
    assert resp.status == 403
    assert (await send(alice, "nobody", b"x")).status == 404
    assert (await stored(r)) == []


async def test_trusted_peer_sender_comes_from_the_cpim_envelope(
    start_server: ServerFactory,
) -> None:
    r = await start_server(sip={"trusted_peers": ["127.0.0.0/8"]})
    await r.add_user("bob")
    r.server.inbox.pushes.interval = 0.05
    await sleeping_device(r)
    trunk = await r.phone("gateway")
    body = cpim("from afar", "t-1", sender='"Zoë" <sip:+4930555@ims.partner.example>')
    resp = await send(trunk, "bob", body, "message/cpim",
                      From=f"<sip:relay@partner.example>;tag={trunk.tag}")
    assert resp.status == 202  # no challenge for a trusted peer, any domain
    (m,) = await stored(r)
    assert (m.from_uri, m.from_name, m.imdn_id) == ("sip:+4930555@ims.partner.example", "Zoë", "t-1")
    await r.server.inbox.pushes.idle(BOB)
    (push,) = sink_pushes(r)
    assert push["payload"]["from_number"] == "+4930555"
    assert push["payload"]["from_name"] == "Zoë"


# ------------------------------------------------------------------- limits
async def test_body_size_encoding_and_empty(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server, max_body=1000)
    assert (await send(alice, "bob", b"x" * 1001)).status == 413
    assert (await send(alice, "bob", b"x" * 1000)).status == 202
    resp = await send(alice, "bob", b"\x1f\x8b", TEXT, **{"Content-Encoding": "gzip"})
    assert resp.status == 400 and "not valid gzip" in resp.reason  # cut short
    resp = await send(alice, "bob", b"x", TEXT, **{"Content-Encoding": "br"})
    assert resp.status == 415 and resp.get("Accept-Encoding") == "gzip, deflate, identity"
    bomb = gzip.compress(b"x" * 1001)  # small on the wire, over max_body once decoded
    assert len(bomb) < 100
    assert (await send(alice, "bob", bomb, TEXT, **{"Content-Encoding": "gzip"})).status == 413
    assert (await send(alice, "bob", b"")).status == 400
    assert len(await stored(r)) == 1


async def test_rate_limit_is_503_with_retry_after(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server, sender_rate=1.0, sender_burst=3)
    statuses = [(await send(alice, "bob", f"{i}".encode())).status for i in range(3)]
    assert statuses == [202, 202, 202]
    resp = await send(alice, "bob", b"too many")
    assert resp.status == 503 and resp.get("Retry-After") == "1"
    assert len(await stored(r)) == 3
    bob = await r.phone("bob")  # per sender: bob is not limited by alice's burst
    assert (await send(bob, "alice", b"hi")).status == 202


async def test_inbox_cap_trims_delivered_never_undelivered(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server, inbox_cap=3)
    for i in range(3):
        assert (await send(alice, "bob", f"{i}".encode())).status == 202
    trims = 0
    trim = r.server.store.trim_messages

    async def counted_trim(aor: str, count: int) -> int:
        nonlocal trims
        trims += 1
        return await trim(aor, count)

    r.server.store.trim_messages = counted_trim  # type: ignore[method-assign]
    for _ in range(5):
        resp = await send(alice, "bob", b"full")
        assert resp.status == 480 and "inbox full" in resp.reason
    assert trims == 1  # a full inbox is not scanned again for every MESSAGE
    instance = instance_id()
    phone = await register(r, "bob", instance)
    await phone.wait_for(3)
    await wait_marked(r, BOB, 3)
    resp = await phone.agent.register(expires=0, header_params=f';+sip.instance="<{instance}>"')
    assert resp.status == 200  # asleep again
    assert (await send(alice, "bob", b"room")).status == 202  # the oldest delivered went
    assert [m.body for m in await stored(r)] == [b"1", b"2", b"room"]


async def test_retention_purge(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server, retention_days=2)
    await send(alice, "bob", b"old")
    await send(alice, "bob", b"new")
    now = time.time()
    assert await r.server.inbox.purge(now + 1 * 86400) == 0
    old, new = await stored(r)
    assert await r.server.inbox.purge(now + 2 * 86400 + 1) == 2
    assert await stored(r) == []
    # the purge runs by itself too: a message received 3 days ago goes at start
    await r.server.store.add_message(
        InboxMessage(0, BOB, "k", ALICE, "", TEXT, b"ancient", received_at=now - 3 * 86400)
    )
    r2 = await start_server(messages={"retention_days": 2},
                            store={"url": r.server.config.store.url})
    async with asyncio.timeout(5):
        while await r2.server.store.messages(BOB):  # noqa: ASYNC110 - no event: a task's work
            await asyncio.sleep(0.01)
    assert old.id < new.id


async def test_typing_indications_are_forwarded_never_stored(
    start_server: ServerFactory,
) -> None:
    r, alice = await setup(start_server)
    typing = b'<?xml version="1.0"?><isComposing><state>active</state></isComposing>'
    ctype = "application/im-iscomposing+xml"
    assert (await send(alice, "bob", typing, ctype)).status == 480  # nobody to tell
    phone = await register(r, "bob", instance_id())
    assert (await send(alice, "bob", typing, ctype)).status == 200
    (got,) = await phone.wait_for(1)
    assert got.body == typing
    assert await stored(r) == []
    await r.server.inbox.pushes.idle(BOB)
    assert sink_pushes(r) == []


async def test_delivery_reports_are_delivered_but_never_pushed(
    start_server: ServerFactory,
) -> None:
    r, alice = await setup(start_server)
    await sleeping_device(r)
    report = cpim(b"<imdn/>", "rep-1", inner="message/imdn+xml")
    assert (await send(alice, "bob", report, "message/cpim")).status == 202
    await r.server.inbox.pushes.idle(BOB)
    assert sink_pushes(r) == [] and await r.server.store.unread_count(BOB) == 0
    phone = await register(r, "bob", instance_id())
    assert (await phone.wait_for(1))[0].body == report


async def test_a_burst_makes_at_most_one_push_per_second(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server, push_interval=1.0, sender_rate=0.0)
    await sleeping_device(r)
    await sleeping_device(r, provider="fcm")
    started = time.monotonic()
    results = await asyncio.gather(*(send(alice, "bob", f"burst {i}".encode())
                                     for i in range(30)))
    assert all(resp.status == 202 for resp in results)
    await r.server.inbox.pushes.idle(BOB)
    elapsed = time.monotonic() - started
    pushes = sink_pushes(r)
    per_device: dict[str, list[dict[str, Any]]] = {}
    for p in pushes:
        per_device.setdefault(p["device_id"], []).append(p)
    assert len(per_device) == 2
    for device_pushes in per_device.values():
        assert len(device_pushes) <= 1 + elapsed  # the first at once, then one a second
        times = sorted(p["at"] for p in device_pushes)
        assert all(b - a >= 0.9 for a, b in itertools.pairwise(times))
    newest = max(pushes, key=lambda p: p["at"])
    fields = newest["payload"].get("data", newest["payload"])  # FCM: in data, as strings
    assert str(fields["unread"]) == "30"
    # the newest push carries the newest message (the burst's last to be stored)
    last = (await stored(r))[-1]
    assert fields["message_id"] == str(last.id)


async def test_compressed_bodies_are_read_kept_and_delivered_as_sent(
    start_server: ServerFactory,
) -> None:
    """linphone sends its delivery reports with Content-Encoding: deflate; a 415 lost
    them (linphone never retries). Read them, keep and deliver them as they came."""
    r, alice = await setup(start_server)
    await sleeping_device(r)
    report = cpim(b"<imdn><message-id>m1</message-id></imdn>", "dlr-1",
                  inner="message/imdn+xml")
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bodies = [
        (gzip.compress(cpim("gzipped hello", "gz-1")), "gzip"),
        (zlib.compress(report), "deflate"),
        (raw.compress(b"raw deflate, as some clients send") + raw.flush(), "deflate"),
    ]
    types = ["message/cpim", "message/cpim", TEXT]
    for (body, encoding), ctype in zip(bodies, types, strict=True):
        resp = await send(alice, "bob", body, ctype, **{"Content-Encoding": encoding})
        assert resp.status == 202
    # the IMDN id was read through the encoding: a resend is the same message
    again = await send(alice, "bob", bodies[0][0], types[0], **{"Content-Encoding": "gzip"})
    assert again.status == 202
    kept = await stored(r)
    assert [(m.body, m.content_encoding) for m in kept] == bodies
    assert kept[0].imdn_id == "gz-1" and kept[1].silent  # a delivery report: never pushed
    await r.server.inbox.pushes.idle(BOB)
    previews = [p["payload"]["preview"] for p in sink_pushes(r)]
    assert "raw deflate, as some clients send" in previews
    assert all("imdn" not in p for p in previews)

    handset = await register(r, "bob", instance_id())
    got = await handset.wait_for(3)
    assert [(m.body, m.get("Content-Encoding")) for m in got] == bodies
    handset.stop()
    # the HTTP inbox gives the content itself
    assert r.server.http is not None
    import aiohttp

    from tests.helpers.api import basic

    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{r.server.http.port}/v1/messages"
        async with http.get(url, headers=basic("bob")) as resp:
            listed = (await resp.json())["messages"]
    assert listed[2]["body"] == "raw deflate, as some clients send"
    assert listed[0]["body"] == cpim("gzipped hello", "gz-1").decode()


async def test_a_big_message_is_not_sent_over_udp(start_server: ServerFactory) -> None:
    """An 8.4 KB MESSAGE went to a UDP phone as one datagram: pjsua kept 4,000 bytes and
    the inbox marked it delivered. RFC 3428 §9: over 1,300 bytes it waits for a stream
    binding (or the HTTP inbox); the push still goes, and the small ones still flow."""
    r, alice = await setup(start_server)
    inst = instance_id()
    await sleeping_device(r)
    udp = await register(r, "bob", inst)
    big = ("8.4 KB of text " * 600).encode()[:8400]
    started = asyncio.get_running_loop().time()
    assert (await send(alice, "bob", big)).status == 202  # not delivered: pushed
    assert asyncio.get_running_loop().time() - started < 0.4  # nothing to wait for
    assert (await send(alice, "bob", b"small one")).status == 200
    assert [m.body for m in udp.got] == [b"small one"]
    await r.server.inbox.pushes.idle(BOB)
    assert [p["payload"]["preview"][:15] for p in sink_pushes(r)] == ["8.4 KB of text "]
    # a refresh over UDP still doesn't send it; over TCP the same device gets it
    assert (await udp.agent.register(header_params=f';+sip.instance="<{inst}>"')).status == 200
    await r.server.inbox.courier.idle()
    assert [m.body for m in udp.got] == [b"small one"]
    tcp = await r.phone("bob", transport="tcp")
    handset = Handset(tcp)
    assert (await tcp.register(header_params=f';+sip.instance="<{inst}>"')).status == 200
    (got,) = await handset.wait_for(1)
    assert got.body == big
    handset.stop()
    udp.stop()
