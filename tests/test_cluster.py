"""A cluster of installed `sipwake serve` nodes on loopback, sharing the machine's real
PostgreSQL (a fresh schema) and Redis (DESIGN "Cluster (settled)").

Any node serves any phone: a call parked on A rings the app when it registers on B
(over UDP and over TCP: through B, which holds the connection); a live phone on B is
called through A; a message stored through A is pushed once and delivered on B; one
push per event with two nodes up; the failed-auth throttle and the call push limits
count across nodes; a node killed with SIGKILL leaves the other serving with nothing
stored lost; Redis cut off and back: the nodes carry on.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from sipwake.sip.message import Message
from tests.helpers.agent import Agent, Dialer, next_request, respond
from tests.helpers.apns_standin import APNsStandIn, Reply, Request
from tests.helpers.faults import FaultyProxy
from tests.helpers.push import BUNDLE, KEY_ID, TEAM_ID
from tests.helpers.wait import wait_for
from tests.served import DOMAIN, Served, run_sipwake, serve

REDIS = ("127.0.0.1", 6379)
DEBUG = '[log]\nlevel = "DEBUG"\n'
ALERT, VOIP = "c3" * 32, "d4" * 32
PN = f";pn-provider=apns;pn-prid={ALERT}:remote&{VOIP}:voip;pn-param={TEAM_ID}.{BUNDLE}.remote&voip"
INSTANCE = ';+sip.instance="<urn:uuid:0c1d2e3f-4a5b-4c6d-8e7f-a0b1c2d3e4f5>"'
OFFER = b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=alice 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n"


@pytest.fixture(autouse=True)
async def redis_up() -> None:
    try:
        client = aioredis.Redis(host=REDIS[0], port=REDIS[1], socket_connect_timeout=1)
        await client.ping()
        await client.aclose()
    except OSError as exc:
        pytest.fail(f"Redis must run on 127.0.0.1:6379 (as on the CI machine): {exc}")


class Nodes:
    def __init__(self, tmp_path: Path, pg_url: str, apns: tuple[APNsStandIn, str, str]) -> None:
        self.tmp_path = tmp_path
        self.pg_url = pg_url
        self.standin, self.key_file, self.ca_file = apns
        self.nodes: list[Served] = []
        self.secret = f"cluster-{tmp_path.name}"  # one cluster per test: its own bus

    def toml(self, redis: tuple[str, int], extra: str, calls: str) -> str:
        return f"""
[sip]
domain = "{DOMAIN}"
listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
secret = "{self.secret}"

[http]
listen = "127.0.0.1:0"

[store]
url = "{self.pg_url}"

[cluster]
redis_url = "redis://{redis[0]}:{redis[1]}/0"

[calls]
park_timeout = 20
{calls}

[push.apns]
team_id = "{TEAM_ID}"
key_id = "{KEY_ID}"
key_file = "{self.key_file}"
topic = "{BUNDLE}"
url = "{self.standin.url}"
sandbox_url = "{self.standin.url}"
ca_file = "{self.ca_file}"
{extra}
"""

    async def start(
        self, redis: tuple[str, int] = REDIS, extra: str = "", calls: str = "", workers: int = 1
    ) -> Served:
        n = len(self.nodes)
        workdir = self.tmp_path / f"node{n}"
        workdir.mkdir()
        users = (("alice", "secret"), ("bob", "secret")) if n == 0 else ()
        args = ("--workers", str(workers)) if workers > 1 else ()
        node = await serve(workdir, self.toml(redis, extra, calls), users=users, args=args)
        self.nodes.append(node)
        await wait_for(lambda: _count(node, "cluster bus up") == workers, timeout=20)
        return node

    async def stop(self) -> None:
        for node in self.nodes:
            code = await node.stop()
            if code != -signal.SIGKILL:
                assert code == 0, "\n".join(node.log[-30:])
                assert node.tracebacks() == [], "\n".join(node.log)


@pytest.fixture
async def nodes(
    tmp_path: Path, pg_url: str, apns: tuple[APNsStandIn, str, str]
) -> AsyncIterator[Nodes]:
    cluster = Nodes(tmp_path, pg_url, apns)
    yield cluster
    await cluster.stop()


async def phone(node: Served, transport: str = "udp", user: str = "alice") -> Agent:
    return await Agent(user, "secret", DOMAIN, node.sip[transport], transport).start()


def pushes(standin: APNsStandIn, token: str, kind: str) -> list[Request]:
    return [
        r for r in standin.requests
        if r.token == token and r.status == 200 and r.payload.get("type") == kind
    ]  # fmt: skip


async def asleep(node: Served, transport: str = "udp") -> None:
    """The app uploads its tokens in a REGISTER on `node`, then the OS kills it."""
    app = await phone(node, transport)
    assert (await app.register(PN, INSTANCE)).status == 200
    assert (await app.register(PN, INSTANCE, expires=0)).status == 200
    app.close()


async def message(node: Served, text: bytes) -> int:
    """bob sends alice `text` through `node`: the answer's status."""
    sender = await phone(node, "udp", "bob")
    try:
        sent = await sender.request("MESSAGE", f"sip:alice@{DOMAIN}",
                                    {"Content-Type": "text/plain"}, text)  # fmt: skip
        return sent.status
    finally:
        sender.close()


async def call_alice(caller: Agent) -> Dialer:
    """The caller INVITEs alice (answering the 407 challenge)."""
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    await dial.start_authenticated()
    return dial


async def answer(app: Agent, dial: Dialer) -> None:
    invite = await next_request(app, "INVITE")
    assert invite.body == OFFER and "pn-" not in invite.uri and "sw-" not in invite.to_bytes().decode()
    respond(app, invite, 180, tag="app")
    respond(app, invite, 200, ANSWER, tag="app")
    answered = await dial.final()
    assert answered.status == 200 and answered.body == ANSWER
    dial.ack(answered)
    assert (await next_request(app, "ACK")).call_id == invite.call_id
    bye = asyncio.ensure_future(dial.in_dialog("BYE", answered))
    respond(app, await next_request(app, "BYE"), 200)
    assert (await bye).status == 200


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_parked_on_a_rings_the_app_registering_on_b(
    nodes: Nodes, transport: str
) -> None:
    a = await nodes.start()
    b = await nodes.start()
    await asleep(b, transport)
    caller = await phone(a, "udp", "bob")
    dial = await call_alice(caller)
    await dial.provisional(180)  # parked on A
    (push,) = await nodes.standin.wait_request(
        lambda r: r.token == VOIP and r.payload.get("type") == "call"
    )
    assert push.payload["caller_uri"] == f"sip:bob@{DOMAIN}"
    app = await phone(b, transport)  # woken: registers with the other node
    try:
        assert (await app.register(PN, INSTANCE)).status == 200
        await answer(app, dial)
    finally:
        app.close()
        caller.close()
    assert len(pushes(nodes.standin, VOIP, "call")) == 1  # one push, not one per node
    assert pushes(nodes.standin, ALERT, "missed_call") == []


async def test_live_phone_on_b_is_called_through_a(nodes: Nodes) -> None:
    a = await nodes.start(extra=DEBUG)
    b = await nodes.start()
    app = await phone(b, "tcp")
    caller = await phone(a, "udp", "bob")
    try:
        assert (await app.register(PN, INSTANCE)).status == 200
        await a.wait_log(f"cluster: sip:alice@{DOMAIN} registered on")
        dial = await call_alice(caller)
        await answer(app, dial)
    finally:
        app.close()
        caller.close()
    assert pushes(nodes.standin, VOIP, "call") == []  # it was live: nobody woken


async def test_message_through_a_is_pushed_once_and_delivered_on_b(nodes: Nodes) -> None:
    a = await nodes.start()
    b = await nodes.start()
    await asleep(b)
    assert await message(a, b"stored through A") == 202
    (push,) = await nodes.standin.wait_request(
        lambda r: r.token == ALERT and r.payload.get("type") == "message"
    )
    assert push.payload["preview"] == "stored through A"
    app = await phone(b, "tcp")
    try:
        assert (await app.register(PN, INSTANCE)).status == 200
        delivered = await next_request(app, "MESSAGE")
        assert delivered.body == b"stored through A"
        respond(app, delivered, 200)
    finally:
        app.close()
    assert len(pushes(nodes.standin, ALERT, "message")) == 1


async def test_throttle_and_call_push_limits_count_across_nodes(nodes: Nodes) -> None:
    limits = {"extra": "[auth]\nmax_failures = 3\n", "calls": "source_burst = 2\n"}
    a = await nodes.start(extra=limits["extra"] + DEBUG, calls=limits["calls"])
    b = await nodes.start(extra=limits["extra"] + DEBUG, calls=limits["calls"])
    # bob may wake alice twice in a row, wherever he calls from; a call cancelled at
    # once counts twice: after one such call through A, a call through B wakes nobody
    await asleep(b)
    for node, status in ((a, 180), (b, 480)):
        caller = await phone(node, "udp", "bob")
        dial = await call_alice(caller)
        if status == 180:
            await dial.provisional(180)
            await nodes.standin.wait_request(lambda r: r.token == VOIP)
            dial.cancel()
            assert (await dial.final()).status == 487
            # the limits are shared by events, not asked for: B has counted both takes
            try:
                await wait_for(lambda: _count(b, "calls.source counted a take") == 2)
            except TimeoutError:
                pytest.fail("B did not count A's two takes:\n" + "\n".join(
                    f"{name}: {line}" for name, node in (("A", a), ("B", b))
                    for line in node.log if "calls" in line or "cluster" in line))
        else:
            assert (await dial.final()).status == 480  # too many calls
        caller.close()
    assert len(pushes(nodes.standin, VOIP, "call")) == 1
    # four wrong passwords on A: the address is refused by B too, a right password as well
    guesser = await Agent("alice", "wrong", DOMAIN, a.sip["udp"], "udp").start()
    for _ in range(4):
        assert (await guesser.register()).status == 403
    guesser.close()
    await b.wait_log("auth: 127.0.0.1 refused")  # B counted A's failures as its own
    app = await phone(b)
    try:
        refused = await app.register()
        assert refused.status in (403, 503), refused.status
    finally:
        app.close()


async def test_a_node_killed_mid_call_leaves_the_other_serving(nodes: Nodes) -> None:
    a = await nodes.start()
    b = await nodes.start()
    await asleep(b)
    assert await message(b, b"stored through B") == 202
    caller = await phone(b, "udp", "bob")
    dial = await call_alice(caller)
    await dial.provisional(180)  # parked on B
    b.proc.send_signal(signal.SIGKILL)  # B dies with its parked call (documented)
    await b.proc.wait()
    caller.close()
    # A serves on: a new call parks there, the app registers with A, answers, and gets
    # the message B stored
    caller = await phone(a, "udp", "bob")
    dial = await call_alice(caller)
    await dial.provisional(180)
    app = await phone(a, "tcp")
    try:
        assert (await app.register(PN, INSTANCE)).status == 200
        seen: list[str] = []
        while len(seen) < 2:
            req = await _next(app)
            if req.method == "MESSAGE":
                assert req.body == b"stored through B"
                respond(app, req, 200)
                seen.append("MESSAGE")
            elif req.method == "INVITE":
                respond(app, req, 200, ANSWER, tag="app")
                answered = await dial.final()
                assert answered.status == 200
                dial.ack(answered)
                seen.append("INVITE")
    finally:
        app.close()
        caller.close()


def _count(node: Served, text: str) -> int:
    return sum(text in line for line in node.log)


async def _next(app: Agent) -> Message:
    async with asyncio.timeout(10):
        return await app.requests.get()


async def test_redis_cut_off_and_back(nodes: Nodes) -> None:
    proxy = await FaultyProxy(REDIS).start()
    try:
        a = await nodes.start(redis=("127.0.0.1", proxy.port))
        b = await nodes.start(redis=("127.0.0.1", proxy.port))
        await proxy.cut()
        await a.wait_log("cluster bus lost")
        # off the bus, a node still serves what it holds: the app registers with A
        app = await phone(a, "tcp")
        caller = await phone(b, "udp", "bob")
        try:
            assert (await app.register(PN, INSTANCE)).status == 200
            await proxy.restore()
            # back on the bus, B reads from the store what it missed meanwhile
            await wait_for(lambda: _count(b, "bindings of other nodes read back") == 2, 15)
            dial = await call_alice(caller)
            await answer(app, dial)  # through A, which holds the app's connection
        finally:
            app.close()
            caller.close()
    finally:
        await proxy.close()


async def test_workers_share_one_address(nodes: Nodes) -> None:
    """`serve --workers 2`: one address for the phones; the kernel spreads the sources
    over the workers, and each call reaches its app whichever worker holds which."""
    served = await nodes.start(workers=2)
    assert len({line for line in served.log if "cluster node tcp:" in line}) == 2
    assert len(set(served.sip)) == 2  # udp and tcp, one port each for both workers
    for n in range(4):  # callers on new UDP sources, apps on new TCP connections
        # (4: bob may wake alice 5 times a minute)
        await asleep(served, "tcp")
        caller = await phone(served, "udp", "bob")
        dial = await call_alice(caller)
        await dial.provisional(180)
        await nodes.standin.wait_request(
            lambda r, n=n: len(pushes(nodes.standin, VOIP, "call")) > n
        )
        app = await phone(served, "tcp")
        try:
            assert (await app.register(PN, INSTANCE)).status == 200
            await answer(app, dial)
        finally:
            app.close()
            caller.close()


async def test_pushes_kept_by_a_node_that_died_are_sent_by_another(nodes: Nodes) -> None:
    a = await nodes.start()
    b = await nodes.start()
    await asleep(b)
    nodes.standin.always(ALERT, Reply(503, "ServiceUnavailable"))  # APNs down for now
    assert await message(b, b"kept in B's outbox") == 202
    await nodes.standin.wait_request(lambda r: r.token == ALERT and r.status == 503)
    b.proc.send_signal(signal.SIGKILL)  # B dies with the push still to send
    await b.proc.wait()
    del nodes.standin.sticky[ALERT]  # APNs is back: A takes B's pushes over and sends
    (push,) = await nodes.standin.wait_request(
        lambda r: r.token == ALERT and r.status == 200, timeout=30
    )
    assert push.payload["preview"] == "kept in B's outbox"
    await a.wait_log("adopting 1 pushes from the outbox of node")


async def test_pickup_reaching_another_node_is_sent_to_the_park(nodes: Nodes) -> None:
    """The woken app answers (CallKit) with an INVITE to the push's pickup URI, which
    reaches B; the call is parked on A: B sends the pickup there, and the dialog runs
    through both."""
    a = await nodes.start()
    b = await nodes.start()
    await asleep(a)
    caller = await phone(a, "udp", "bob")
    dial = await call_alice(caller)
    await dial.provisional(180)
    (push,) = await nodes.standin.wait_request(lambda r: r.token == VOIP and r.status == 200)
    pickup_uri = push.payload["pickup_uri"]
    app = await phone(b, "udp")
    try:
        pickup = Dialer(app, pickup_uri)
        await pickup.start_authenticated()
        ok = await pickup.final()
        assert ok.status == 200 and ok.body == OFFER  # the caller's offer, from A via B
        host, port = app.local
        app.send_raw((
            f"ACK {ok.contacts[0].uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKack{pickup.cseq};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: {ok.get('From')}\r\nTo: {ok.get('To')}\r\n"
            f"Call-ID: {ok.call_id}\r\nCSeq: {pickup.cseq} ACK\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(ANSWER)}\r\n\r\n"
        ).encode() + ANSWER)  # fmt: skip
        answered = await dial.final()
        assert answered.status == 200 and answered.body == ANSWER  # the app's answer
        dial.ack(answered)
        bye = asyncio.ensure_future(dial.in_dialog("BYE", answered))
        respond(app, await next_request(app, "BYE"), 200)
        assert (await bye).status == 200
    finally:
        app.close()
        caller.close()


async def test_message_through_a_to_a_live_phone_on_b(nodes: Nodes) -> None:
    """B's lane delivers (one lane per device in the cluster); A's sender gets 200, as
    when the phone is on A, and nobody is pushed."""
    a = await nodes.start(extra=DEBUG)
    b = await nodes.start()
    app = await phone(b, "tcp")
    try:
        assert (await app.register(PN, INSTANCE)).status == 200
        await a.wait_log(f"cluster: sip:alice@{DOMAIN} registered on")
        sending = asyncio.ensure_future(message(a, b"live on B"))
        delivered = await next_request(app, "MESSAGE")
        assert delivered.body == b"live on B"
        respond(app, delivered, 200)
        assert await sending == 200
    finally:
        app.close()
    assert pushes(nodes.standin, ALERT, "message") == []


async def test_late_iphone_on_b_gets_invite_and_cancel_with_the_reason(nodes: Nodes) -> None:
    """CallKit rang for a VoIP push; the caller hung up on A before the app registered
    on B: the app gets the INVITE and at once a CANCEL saying why (RFC 3326)."""
    a = await nodes.start(extra=DEBUG)
    b = await nodes.start()
    await asleep(b)
    caller = await phone(a, "udp", "bob")
    dial = await call_alice(caller)
    await dial.provisional(180)
    await nodes.standin.wait_request(lambda r: r.token == VOIP and r.status == 200)
    dial.cancel()
    assert (await dial.final()).status == 487
    caller.close()
    app = await phone(b, "tcp")
    try:
        assert (await app.register(PN, INSTANCE)).status == 200
        invite = await next_request(app, "INVITE")
        respond(app, invite, 180, tag="late")
        cancel = await next_request(app, "CANCEL")
        assert cancel.call_id == invite.call_id
        assert "cause=487" in (cancel.get("Reason") or "")
        respond(app, cancel, 200)
        respond(app, invite, 487, tag="late")
    finally:
        app.close()


async def test_a_response_handed_to_the_wrong_node_reaches_its_transaction(
    nodes: Nodes,
) -> None:
    """With --workers, the kernel may hand a UDP response to a worker that did not send
    the request (after the set of workers changed): our branches name the sender, and
    the worker that got the response passes it on."""
    a = await nodes.start()
    b = await nodes.start()
    app = await phone(a, "udp")
    caller = await phone(a, "udp", "bob")
    loop = asyncio.get_running_loop()
    astray, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                    remote_addr=b.sip["udp"])  # fmt: skip
    try:
        assert (await app.register()).status == 200
        dial = await call_alice(caller)
        invite = await next_request(app, "INVITE")
        from sipwake.sip.message import make_response

        ok = make_response(invite, 200, to_tag="astray")
        ok.add("Contact", f"<sip:alice@{app.local[0]}:{app.local[1]}>")
        ok.add("Content-Type", "application/sdp")
        ok.body = ANSWER
        astray.sendto(ok.to_bytes())  # to B, though A sent the INVITE
        answered = await dial.final()
        assert answered.status == 200 and answered.body == ANSWER
        dial.ack(answered)
    finally:
        astray.close()
        app.close()
        caller.close()


async def test_a_binding_is_counted_and_logged_by_its_own_node(nodes: Nodes) -> None:
    """sipwake_bindings and the 'binding new/gone' lines are the registering node's:
    summed over the nodes, the cluster's count; the other node learns of the binding
    (it can route to it) without counting or logging it."""
    async def bindings(node: Served) -> float:
        async with aiohttp.ClientSession() as http, http.get(f"{node.http}/metrics") as resp:
            text = await resp.text()
        (family,) = [f for f in text_string_to_metric_families(text) if f.name == "sipwake_bindings"]
        return family.samples[0].value

    a = await nodes.start(extra=DEBUG)
    b = await nodes.start()
    app = await phone(b, "tcp")
    try:
        assert (await app.register(PN, INSTANCE)).status == 200
        await a.wait_log(f"cluster: sip:alice@{DOMAIN} registered on")
        assert (await bindings(b), await bindings(a)) == (1, 0)
        assert (await app.register(PN, INSTANCE, expires=0)).status == 200
        await b.wait_log(r"binding gone \(unregistered\): sip:alice@")
        assert (await bindings(b), await bindings(a)) == (0, 0)
    finally:
        app.close()
    assert b.log_has("binding new: sip:alice@") and not a.log_has("binding new:")
    assert not a.log_has("binding gone")


async def test_a_password_changed_with_the_cli_is_seen_by_every_node(nodes: Nodes) -> None:
    """Each node holds alice's HA1 in memory; `sipwake user passwd`, run against the
    shared store, reaches both within a poll of the change log (about a second)."""
    a = await nodes.start()
    b = await nodes.start()
    for node in (a, b):
        assert (await (await phone(node)).register()).status == 200  # cached on each
    config = a.workdir / "sipwake.toml"
    code, out = await run_sipwake("user", "passwd", "alice", "--password", "changed",
                                  "--config", str(config), cwd=a.workdir)  # fmt: skip
    assert code == 0, out

    async def status(node: Served, password: str) -> int:
        agent = await Agent("alice", password, DOMAIN, node.sip["udp"], "udp").start()
        try:
            return (await agent.register()).status
        finally:
            agent.close()

    await asyncio.sleep(2.5)  # a poll a second (not polled here: failures are throttled)
    for node in (a, b):
        assert await status(node, "secret") == 403
        assert await status(node, "changed") == 200
