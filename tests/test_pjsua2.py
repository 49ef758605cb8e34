"""A real phone stack against the installed server: pjsua2 as the sleeping mobile app.

pjsua2 (PJSIP's own API, in a driver process of its own: tests/helpers/pjsua_phone.py)
registers with digest auth and RFC 8599 parameters in its Contact URI over UDP, TCP
and TLS against `sipwake serve` (tests/served.py); goes to sleep (unregisters); bob
calls from a test agent; the call is parked and a VoIP push goes to a strict APNs
stand-in over TLS (tests/helpers/apns_standin.py); then the app either wakes and
registers, gets the parked INVITE and answers it, or picks the call up explicitly with
an INVITE to the push's pickup_uri that carries no offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sipwake.sip.message import Message
from tests.helpers.agent import Agent, Dialer
from tests.helpers.api import basic
from tests.helpers.apns_standin import APNsStandIn
from tests.helpers.certs import make_certs
from tests.helpers.push import BUNDLE, KEY_ID, TEAM_ID, write_apns_key
from tests.served import DOMAIN, Served, apns_config, serve

DRIVER = Path(__file__).parent / "helpers" / "pjsua_phone.py"
ALICE = f"sip:alice@{DOMAIN}"
OFFER = (
    b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
)
STEP = 10.0  # seconds any one step may take


# pjsua2 is only ever imported by the driver process; a missing module skips early
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pjsua2") is None,
    reason="pjsua2 is not installed (pip install pjsua2-python, in the [test] extra)",
)


# ------------------------------------------------------------------ the phone
@dataclass
class PjPhone:
    """The test's end of tests/helpers/pjsua_phone.py: commands in, events out."""

    proc: asyncio.subprocess.Process
    log_path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0  # `expect` looks at events from here on
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, log_path: Path) -> PjPhone:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(DRIVER), str(log_path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        phone = cls(proc, log_path)
        phone._reader = asyncio.ensure_future(phone._read())
        first = await phone.expect("*")
        if first["event"] == "error" and "import pjsua2" in first["what"]:
            await phone.quit()
            pytest.skip(f"pjsua2 does not load: {first['what']}")
        assert first["event"] == "ready", first
        return phone

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            self._changed.set()
        self.events.append({"event": "exit"})
        self._changed.set()

    def send(self, cmd: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())

    async def expect(
        self,
        kind: str,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
        timeout: float = STEP,
    ) -> dict[str, Any]:
        """The next event of `kind` (that `where` accepts) from the cursor on; the
        cursor moves past it. An error or the driver's exit fails the test."""
        async with asyncio.timeout(timeout):
            while True:
                for i in range(self.cursor, len(self.events)):
                    event = self.events[i]
                    if kind in (event["event"], "*") and where(event):
                        self.cursor = i + 1
                        return event
                    if event["event"] in ("error", "exit") and kind not in ("error", "exit"):
                        pytest.fail(f"pjsua2 driver: {event}\n{self.log_tail()}")
                self._changed.clear()
                await self._changed.wait()

    def sip(self, direction: str, start: str, since: int = 0) -> list[str]:
        """Every SIP message pjsua2 sent (tx) or received (rx) whose first line starts so."""
        return [
            e["msg"] for e in self.events[since:]
            if e["event"] == "sip" and e["dir"] == direction and e["msg"].startswith(start)
        ]  # fmt: skip

    async def wait_sip(
        self, direction: str, start: str, since: int = 0, count: int = 1, timeout: float = STEP
    ) -> list[str]:
        """`sip(...)` once it has `count` messages: a message reaches its peer before
        the driver's line about it reaches us."""
        async with asyncio.timeout(timeout):
            while len(found := self.sip(direction, start, since)) < count:
                self._changed.clear()
                await self._changed.wait()
        return found

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def quit(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(OSError):  # the driver may have gone already
                self.send("quit")
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader

    # -------------------------------------------------------------- the app
    async def register(self) -> dict[str, Any]:
        self.send("register")
        return await self.expect("reg")

    async def unregister(self) -> dict[str, Any]:
        self.send("unregister")
        return await self.expect("reg")


def body_of(msg: str) -> bytes:
    """The body of a SIP message as the driver reported it."""
    return msg.split("\r\n\r\n", 1)[1].encode()


# ------------------------------------------------------------- server + APNs
class WatchedAPNs(APNsStandIn):
    """The strict stand-in, with an event per request it has answered."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.handled = asyncio.Event()

    def handle(self, conn_no: int, stream_id: int, headers: dict[str, str],
               body: bytes) -> tuple[int, str, Any]:  # fmt: skip
        result = super().handle(conn_no, stream_id, headers, body)
        self.handled.set()
        return result

    async def next_request(self, count: int, timeout: float = STEP) -> Any:
        """The `count`-th request (1-based) once it has been answered."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self.handled.clear()
                await self.handled.wait()
        return self.requests[count - 1]


@dataclass
class World:
    served: Served
    apns: WatchedAPNs
    tmp: Path
    phones: list[PjPhone] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)

    async def phone(
        self, transport: str, prid: str, instance: str, at_address: bool = False
    ) -> PjPhone:
        """A pjsua2 app with its VoIP push token in every Contact URI it sends
        (`AccountConfig.sipConfig.contactUriParams`); it registers at once."""
        phone = await PjPhone.start(self.tmp / f"pjsua-{len(self.phones)}.log")
        self.phones.append(phone)
        params = f";pn-provider=apns;pn-prid={prid};pn-param={TEAM_ID}.{BUNDLE}.voip"
        phone.send(
            "start", transport=transport, server=list(self.served.sip[transport]),
            domain=DOMAIN, user="alice", password="secret", params=params, instance=instance,
            at_address=at_address,
        )  # fmt: skip
        await phone.expect("started")
        return phone

    async def caller(self) -> Agent:
        agent = await Agent("bob", "secret", DOMAIN, self.served.sip["udp"], "udp").start()
        self.agents.append(agent)
        return agent

    async def devices(self) -> list[dict[str, Any]]:
        auth = basic("alice")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.served.http}/v1/devices", headers=auth) as resp,
        ):
            assert resp.status == 200
            return list((await resp.json())["devices"])


@pytest.fixture
def server_loop() -> str:
    return "auto"  # uvloop when installed, as shipped


@pytest.fixture
async def world(tmp_path: Path, server_loop: str) -> AsyncIterator[World]:
    certs = make_certs(tmp_path)
    key_file, key = write_apns_key(tmp_path)
    apns = await WatchedAPNs(
        team_id=TEAM_ID, key_id=KEY_ID, public_key=key.public_key(), topics={BUNDLE},
        ssl_context=certs.server_context(["h2"]),
    ).start()  # fmt: skip
    # the end-to-end config: every transport, a self-signed SIP certificate, the stand-in
    served = await serve(
        tmp_path, apns_config(tmp_path, apns, key_file, certs.ca_file), loop=server_loop
    )
    w = World(served, apns, tmp_path)
    try:
        yield w
    finally:
        for phone in w.phones:
            await phone.quit()
        for agent in w.agents:
            agent.close()
        code = await served.stop()
        await apns.close()
    assert code == 0, "\n".join(served.log[-40:])
    assert served.tracebacks() == [], "\n".join(served.log)


# ------------------------------------------------------------------ the story
PN_IN_URI = re.compile(
    r"Contact: <sip:alice@127\.0\.0\.1:\d+(?:;transport=(\w+))?[^>]*"
    r";pn-provider=apns;pn-prid=([0-9a-f]{64});pn-param=([\w.]+)[^>]*>"
)


async def register_then_sleep(
    w: World, transport: str, at_address: bool = False
) -> tuple[PjPhone, str, str]:
    """The app starts, registers its VoIP token (RFC 8599, in the Contact URI) with
    digest auth, and goes to sleep: unregistered, so no live binding is left."""
    prid, instance = secrets.token_hex(32), f"urn:uuid:{uuid.uuid4()}"
    phone = await w.phone(transport, prid, instance, at_address)
    reg = await phone.expect("reg")
    assert reg["code"] == 200 and reg["active"], reg
    sent = phone.sip("tx", "REGISTER")
    assert len(sent) == 2 and "Authorization: Digest" in sent[1]  # 401, then digest
    registrar = "sip:127.0.0.1:" if at_address else f"sip:{DOMAIN};"
    assert sent[1].startswith(f"REGISTER {registrar}"), sent[1]
    m = PN_IN_URI.search(sent[1])
    assert m, sent[1]  # pn-* inside the URI's <>, as pjsua2 puts contactUriParams
    assert (m.group(1) or "udp").lower() == transport and m.group(2) == prid
    assert m.group(3) == f"{TEAM_ID}.{BUNDLE}.voip"
    # pjsua2 sends +sip.instance (RFC 5626 outbound) over TCP and TLS only; over UDP the
    # binding and the device are known by the token
    assert (f'+sip.instance="<{instance}>"' in sent[1]) == (transport != "udp")
    (ok,) = phone.sip("rx", "SIP/2.0 200")
    assert 'Feature-Caps: *;+sip.pns="apns"' in ok
    (device,) = await w.devices()
    assert device["platform"] == "ios" and device["voip_token"] == prid
    assert device["topic"] == BUNDLE and device["call_mode"] == "voip" and device["enabled"]

    reg = await phone.unregister()
    assert reg["code"] == 200 and not reg["active"] and reg["expiration"] == 0, reg
    assert "Expires: 0" in phone.sip("tx", "REGISTER")[-1]
    assert len(await w.devices()) == 1  # the token outlives the binding
    return phone, prid, device["device_id"]


async def parked_call(w: World, prid: str, device_id: str) -> tuple[Dialer, dict[str, Any]]:
    """Bob calls the sleeping app: ringback at once, a VoIP push to the stand-in."""
    caller = await w.caller()
    # (Agent.build's default To is the agent's own AOR: name the callee)
    headers = {"From": f'"Bob B" <sip:bob@{DOMAIN}>;tag={caller.tag}', "To": f"<{ALICE}>"}
    dial = Dialer(caller, ALICE, OFFER, headers)
    await dial.start_authenticated(timeout=STEP)  # 407, ACK, INVITE with credentials
    ringing = await dial.provisional(180, timeout=STEP)
    assert ringing.to_tag  # parked: our own 180
    push = await w.apns.next_request(1)
    assert push.status == 200 and w.apns.violations == []
    assert push.token == prid
    assert push.headers["apns-push-type"] == "voip"
    assert push.headers["apns-topic"] == f"{BUNDLE}.voip"
    payload = push.payload
    assert isinstance(payload["aps"], dict) and payload["call_id"]
    assert payload["caller_uri"] == f"sip:bob@{DOMAIN}" and payload["caller_name"] == "Bob B"
    # the pickup URI names the park and the device
    assert payload["pickup_uri"] == f"sip:pickup-{payload['call_id']}.{device_id}@{DOMAIN}"
    return dial, payload


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_sleep_push_wake_answer(world: World, transport: str) -> None:
    await wake_and_answer(world, transport)


@pytest.mark.parametrize("server_loop", ["asyncio"])
async def test_sleep_push_wake_answer_on_asyncio_loop(world: World) -> None:
    await wake_and_answer(world, "tcp")


@pytest.mark.parametrize("transport", ["udp", "tls"])
async def test_registrar_uri_at_the_server_address(world: World, transport: str) -> None:
    """pjsua2 configured the common way: `sip:<server IP>:<port>` as the registrar URI,
    no outbound proxy (REGISTER's Request-URI is our address, not our domain)."""
    await wake_and_answer(world, transport, at_address=True)


async def wake_and_answer(w: World, transport: str, at_address: bool = False) -> None:
    phone, prid, device_id = await register_then_sleep(w, transport, at_address)
    dial, _ = await parked_call(w, prid, device_id)
    assert not [e for e in phone.events if e["event"] == "incoming"]  # asleep: nothing came

    # the push wakes the app: it registers again (same token, same instance) ...
    reg = await phone.register()
    assert reg["code"] == 200 and reg["active"], reg
    # ... and the parked INVITE comes to that registration, without push parameters
    incoming = await phone.expect("incoming")
    invite = incoming["msg"]
    assert invite.startswith("INVITE sip:alice@127.0.0.1:") and "pn-" not in invite
    assert f"To: <{ALICE}>" in invite
    assert body_of(invite) == OFFER
    assert "Record-Route:" in invite
    phone.send("answer", call=incoming["call"], code=180)
    assert (await dial.provisional(180, timeout=STEP)).to_tag != ""
    mark = len(phone.events)
    phone.send("answer", call=incoming["call"], code=200)
    ok = await dial.final(timeout=STEP)
    assert ok.status == 200, ok.status
    (answered,) = await phone.wait_sip("tx", "SIP/2.0 200", mark)
    assert ok.body == body_of(answered) and b"m=audio" in ok.body  # pjsua2's answer
    # pjsua2 puts its push parameters in this Contact too: they never reach the caller
    assert "pn-prid" in answered and ok.contacts
    assert "pn-" not in ok.to_bytes().decode()
    dial.ack(ok)
    answered_call = incoming["call"]
    await phone.expect("state", lambda e: e["call"] == answered_call and e["state"] == "CONFIRMED")
    assert w.apns.violations == [] and len(w.apns.requests) == 1  # answered: no more pushes

    bye = await dial.in_dialog("BYE", ok)
    assert bye.status == 200
    await phone.expect(
        "state", lambda e: e["call"] == answered_call and e["state"] == "DISCONNECTED"
    )


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_sleep_push_explicit_pickup_without_sdp(world: World, transport: str) -> None:
    phone, dial, caller_ok, pickup = await pick_up(world, transport)
    # BYE from the caller crosses the bridge to the app
    bye = await dial.in_dialog("BYE", caller_ok)
    assert bye.status == 200
    await phone.expect("state", lambda e: e["call"] == pickup and e["state"] == "DISCONNECTED")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_pickup_then_register_brings_no_late_invite(world: World, transport: str) -> None:
    """The app that picked up registers too (it is awake now): the call it is in must
    not come to it again as a late INVITE + CANCEL (that is for devices CallKit rang
    which never got the call). pjsua2 has no +sip.instance in an INVITE's Contact: the
    device is known by the pickup URI its push named."""
    phone, dial, caller_ok, pickup = await pick_up(world, transport)
    mark = len(phone.events)
    reg = await phone.register()
    assert reg["code"] == 200 and reg["active"], reg
    # a late INVITE would leave right behind the REGISTER's 200, on the same path as the
    # BYE that follows: once the BYE is through, nothing else came before it
    bye = await dial.in_dialog("BYE", caller_ok)
    assert bye.status == 200
    await phone.expect("state", lambda e: e["call"] == pickup and e["state"] == "DISCONNECTED")
    assert phone.sip("rx", "INVITE", mark) == [], "late INVITE to the device that picked up"
    assert phone.sip("rx", "CANCEL", mark) == []


async def pick_up(w: World, transport: str) -> tuple[PjPhone, Dialer, Message, int]:
    """Sleep, call, push; the app picks up without registering: an INVITE to the
    pickup_uri without an offer, authenticated as alice after a 407 (pjsua2's own
    digest). It gets the caller's offer in sipwake's 200 and answers in its ACK;
    the caller gets that answer in its 200. Returns the caller's 200 and pjsua2's call."""
    phone, prid, device_id = await register_then_sleep(w, transport)
    dial, payload = await parked_call(w, prid, device_id)

    mark = len(phone.events)
    phone.send("call", uri=payload["pickup_uri"], no_sdp=True)
    pickup = (await phone.expect("calling"))["call"]
    confirmed = await phone.expect(
        "state", lambda e: e["call"] == pickup and e["state"] == "CONFIRMED"
    )
    assert confirmed["code"] == 200
    invites = await phone.wait_sip("tx", "INVITE", mark, count=2)
    assert len(invites) == 2, invites  # 407, then with Proxy-Authorization
    assert all(body_of(i) == b"" and "Content-Type" not in i for i in invites)  # no offer
    assert "Proxy-Authorization: Digest" in invites[1]
    (challenge,) = await phone.wait_sip("rx", "SIP/2.0 407", mark)
    assert "Proxy-Authenticate: Digest" in challenge
    (ok,) = await phone.wait_sip("rx", "SIP/2.0 200", mark)
    assert body_of(ok) == OFFER  # sipwake's 200 carries the caller's offer, byte for byte
    # two ACKs: the 407's (no body), then the 200's
    ack_407, ack = await phone.wait_sip("tx", "ACK", mark, count=2)
    assert body_of(ack_407) == b""
    answer = body_of(ack)
    assert b"m=audio" in answer and "Content-Type: application/sdp" in ack

    caller_ok = await dial.final(timeout=STEP)
    assert caller_ok.status == 200 and caller_ok.body == answer  # pjsua2's answer, untouched
    dial.ack(caller_ok)
    assert w.apns.violations == [] and len(w.apns.requests) == 1
    return phone, dial, caller_ok, pickup
