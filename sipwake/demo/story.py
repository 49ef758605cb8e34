"""`sipwake demo`: the whole story, on one machine, in a few seconds.

A node on the embedded defaults (domain `localhost`), in a temporary folder, on free
ports, with local stand-ins for APNs and FCM (providers.py) in place of Apple's and
Google's servers, and simulated apps (phone.py): Alice's iPhone (PushKit/VoIP mode,
tokens in the REGISTER), Bob's iPhone (alert mode, token uploaded over HTTP), Carol's
Android phone (FCM), and Dave's desk phone that calls and writes to them. Each step
is checked and printed as one line (time since the start, ✓ or ✗); the story stops at
the first step that fails. Exit 0 only when every step worked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sipwake.config import Config, load_config
from sipwake.demo.phone import OutgoingCall, Phone
from sipwake.demo.providers import PushStandIn, ReceivedPush
from sipwake.sip.digest import ha1
from sipwake.sip.message import Message
from sipwake.store import open_store
from sipwake.store.models import User

DOMAIN = "localhost"  # the embedded default
TEAM, KEY_ID, BUNDLE, PROJECT = "DEMOTEAM01", "DEMOKEY001", "com.example.dialer", "demo-dialer"
PASSWORD = "demo-password"
STEP_TIMEOUT = 5.0  # seconds any one step may take
ALERT_REPEAT = 1.0  # seconds between iOS alert-mode call alerts (default 15)
OFFER = (b"v=0\r\no=dave 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 40000 RTP/AVP 0\r\na=candidate:1 1 UDP 2130706431 127.0.0.1 40000 typ host\r\n")
ANSWER = (b"v=0\r\no=app 2 2 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
          b"m=audio 50000 RTP/AVP 0\r\na=candidate:1 1 UDP 2130706431 127.0.0.1 50000 typ host\r\n")
TEXT = "Running late, see you at 8?"


class Node(Protocol):
    """A sipwake node (sipwake.server.Server; cli.py hands its factory in)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


NodeFactory = Callable[[Config], Node]
T = TypeVar("T")


class StepFailed(Exception):
    pass


def check(condition: bool, why: str) -> None:
    if not condition:
        raise StepFailed(why)


class Story:
    """Prints the story as it happens: one line per step."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.steps = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def chapter(self, title: str) -> None:
        self.say(f"\n{title}")

    async def step(self, text: str, action: Awaitable[T]) -> T:
        """Run one step; its line says ✓ with `text` (formatted with the result when
        it is a dict), or ✗ with why it failed, and the story stops."""
        what = re.sub(r"\s*\(?\{\w+\}\)?", "", text.split(":")[0])  # results unknown
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                result = await action
        except TimeoutError:
            self._line("✗", f"{what}: nothing within {STEP_TIMEOUT:g} s")
            raise StepFailed(text) from None
        except StepFailed as exc:
            self._line("✗", f"{what}: {exc}")
            raise
        except Exception as exc:
            self._line("✗", f"{what}: {type(exc).__name__}: {exc}")
            raise StepFailed(text) from exc
        self.steps += 1
        self._line("✓", text.format(**result) if isinstance(result, dict) else text)
        return result

    def _line(self, mark: str, text: str) -> None:
        self.say(f"  {time.monotonic() - self.t0:6.2f}s {mark} {text}")


def free_port(kind: int) -> int:
    """A port nobody uses now (the node binds it a moment later)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(folder: Path, standin: PushStandIn) -> Config:
    """The embedded defaults, in `folder`, on free ports, pushing to the stand-ins."""
    cfg = load_config(None, env={})
    cfg.sip.listen = [f"udp:127.0.0.1:{free_port(socket.SOCK_DGRAM)}"]
    cfg.sip.secret = secrets.token_urlsafe(24)
    cfg.http.listen = f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    cfg.http.api_token = secrets.token_urlsafe(24)
    cfg.store.url = f"sqlite:///{folder}/sipwake.db"
    cfg.calls.alert_repeat = ALERT_REPEAT
    apns_key = ec.generate_private_key(ec.SECP256R1())
    key_file = folder / "AuthKey_DEMO.p8"
    key_file.write_bytes(apns_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    apns = cfg.push.apns
    apns.team_id, apns.key_id, apns.key_file, apns.topic = TEAM, KEY_ID, str(key_file), BUNDLE
    apns.url = apns.sandbox_url = standin.url
    apns.allow_insecure = True
    account = folder / "service-account.json"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "demo",
        "private_key": rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode(),
        "client_email": f"sipwake@{PROJECT}.iam.gserviceaccount.com",
        "token_uri": standin.token_url,
    }))  # fmt: skip
    fcm = cfg.push.fcm
    fcm.project_id, fcm.service_account_file = PROJECT, str(account)
    fcm.url, fcm.token_url, fcm.allow_insecure = standin.url, standin.token_url, True
    return cfg


async def add_users(cfg: Config, names: list[str]) -> None:
    store = await open_store(cfg.store.url)
    try:
        realm = cfg.sip.realm or cfg.sip.domain
        for name in names:
            await store.put_user(User(name, cfg.sip.domain, ha1(name, realm, PASSWORD, "MD5"),
                                      ha1(name, realm, PASSWORD, "SHA-256")))
    finally:
        await store.close()


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.split(":", 1)[-1], int(port)


class Demo:
    """The cast, the stand-ins and the node's HTTP API, and the story's chapters."""

    def __init__(self, story: Story, cfg: Config, standin: PushStandIn,
                 http: aiohttp.ClientSession) -> None:
        self.story = story
        self.cfg = cfg
        self.standin = standin
        self.http = http
        self.base = f"http://{cfg.http.listen}"
        sip = _host_port(cfg.sip.listen[0])
        self.alice = Phone("alice", PASSWORD, DOMAIN, sip, agent="Demo iPhone (PushKit)")
        self.bob = Phone("bob", PASSWORD, DOMAIN, sip, agent="Demo iPhone (alert mode)")
        self.carol = Phone("carol", PASSWORD, DOMAIN, sip, agent="Demo Android (FCM)")
        self.dave = Phone("dave", PASSWORD, DOMAIN, sip, display="Dave", agent="Demo desk phone")
        self.voip_a, self.alert_a = secrets.token_hex(32), secrets.token_hex(32)
        self.alert_b = secrets.token_hex(32)
        self.fcm_c = f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(60)}"
        self.pn_alice = (f";pn-provider=apns;pn-prid={self.alert_a}:remote&{self.voip_a}:voip"
                         f";pn-param={TEAM}.{BUNDLE}.remote&voip")
        self.pn_carol = f";pn-provider=fcm;pn-prid={self.fcm_c};pn-param={PROJECT}"
        self.alice_call = ""
        self.timeline_lines: list[str] = []

    async def start(self) -> None:
        for phone in (self.alice, self.bob, self.carol, self.dave):
            await phone.start()

    def close(self) -> None:
        for phone in (self.alice, self.bob, self.carol, self.dave):
            phone.close()

    # ------------------------------------------------------------ HTTP helpers
    def _basic(self, user: str) -> dict[str, str]:
        creds = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {creds}"}

    def _service(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cfg.http.api_token}"}

    async def _json(self, method: str, path: str, headers: dict[str, str],
                    body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, headers=headers,
                                     json=body) as resp:
            return resp.status, await resp.json()

    # ------------------------------------------------------------ the chapters
    async def run(self) -> None:
        s = self.story
        s.chapter("1. Token upload")
        await s.step("Alice's iPhone (iOS, VoIP mode) registers with its PushKit and alert "
                     "tokens in the Contact (RFC 8599): {answer}", self.register_alice())
        await s.step("Bob's iPhone (iOS, alert mode) uploads its token over HTTP: {answer}",
                     self.upload_bob())
        await s.step("Carol's Android phone registers with its FCM token: {answer}",
                     self.register(self.carol, self.pn_carol))
        s.chapter("2. The apps go to sleep")
        await s.step("Alice's and Carol's apps are suspended (REGISTER Expires: 0): "
                     "{answer}", self.sleep())

        s.chapter("3. Call → push → wake → answer (iOS, PushKit)")
        call = self.dave.call(self.alice.aor, OFFER)
        sent = time.monotonic()
        await s.step("Dave calls Alice: nobody is registered, the call is parked and Dave "
                     "hears {answer}", self.parked(call))
        push = await s.step("APNs gets a VoIP push for Alice's iPhone ({headers}): call from "
                            "{caller}, {ms} ms after the INVITE",
                            self.call_push(self.voip_a, sent, "voip"))
        self.alice_call = str(push["call_id"])
        await self.wake_and_answer(self.alice, self.pn_alice, call, "Alice", "PushKit → CallKit")

        s.chapter("4. Call → push → wake → answer (Android, FCM)")
        call = self.dave.call(self.carol.aor, OFFER)
        sent = time.monotonic()
        await s.step("Dave calls Carol: parked, Dave hears {answer}", self.parked(call))
        await s.step("FCM gets a high-priority data message for Carol's phone: call from "
                     "{caller}, {ms} ms after the INVITE", self.call_push(self.fcm_c, sent))
        await self.wake_and_answer(self.carol, self.pn_carol, call, "Carol", "the FCM service")

        s.chapter("5. Missed call (iOS, alert mode)")
        call = self.dave.call(self.bob.aor, OFFER)
        await s.step("Dave calls Bob: parked, Dave hears {answer}", self.parked(call))
        await s.step("APNs gets an alert with Bob's ringtone (aps.sound {sound}), and again "
                     "{repeat} s later with the same apns-collapse-id while it rings",
                     self.alerts_repeat())
        await s.step("Dave gives up (CANCEL → {answer}): APNs gets a missed_call alert for "
                     "Bob's iPhone", self.missed(call))
        await s.step("Bob's app reads GET /v1/calls?missed=1: {count} missed call from "
                     "{caller}", self.call_log())

        s.chapter("6. Message with preview → delivery on REGISTER (Android)")
        await s.step("Carol's app is suspended again: {answer}", self.register(self.carol,
                                                                              self.pn_carol, 0))
        await s.step("Dave sends Carol a MESSAGE: stored before the answer, {answer}",
                     self.send_message())
        await s.step("FCM gets a message push: preview \"{preview}\", unread {unread}",
                     self.message_push())
        await s.step("Carol's app registers: the message is delivered over SIP "
                     "({length} bytes, body as sent) and marked delivered",
                     self.deliver())

        s.chapter("7. Voicemail (iOS)")
        await s.step("The voicemail system reports a new message for Alice (POST "
                     "/v1/voicemail): {answer}", self.voicemail())
        await s.step("APNs gets a voicemail alert for Alice's iPhone (alert token): new "
                     "{new}, from {caller}, {duration} s", self.voicemail_push())

        s.chapter(f"8. What the operator sees: GET /v1/admin/calls/{self.alice_call}")
        await s.step("Alice's call, step by step: {steps}", self.timeline())
        for line in self.timeline_lines:
            s.say(line)

    # ------------------------------------------------------------------ steps
    async def register(self, phone: Phone, pn: str, expires: int = 600) -> dict[str, str]:
        resp = await phone.register(pn, expires)
        check(resp.status == 200, f"REGISTER answered {resp.status} {resp.reason}")
        return {"answer": "200 OK"}

    async def register_alice(self) -> dict[str, str]:
        resp = await self.alice.register(self.pn_alice)
        check(resp.status == 200, f"REGISTER answered {resp.status} {resp.reason}")
        caps = resp.get("Feature-Caps") or ""
        check('+sip.pns="apns"' in caps, f"no APNs in Feature-Caps: {caps!r}")
        return {"answer": f"200 OK, Feature-Caps: {caps}"}

    async def upload_bob(self) -> dict[str, str]:
        status, token = await self._json("POST", "/v1/tokens", self._basic("bob"),
                                         {"scope": "devices"})
        check(status == 200, f"POST /v1/tokens answered {status}: {token}")
        bearer = {"Authorization": f"Bearer {token['token']}"}
        body = {"platform": "ios", "push_token": self.alert_b, "topic": BUNDLE,
                "call_mode": "alert", "ringtone": "ring.caf"}
        status, device = await self._json("PUT", "/v1/devices/bob-iphone", bearer, body)
        check(status in (200, 201), f"PUT /v1/devices answered {status}: {device}")
        check(device["call_mode"] == "alert", f"stored as {device}")
        return {"answer": f"POST /v1/tokens (scope devices), PUT /v1/devices/bob-iphone → "
                          f"{status}, call_mode alert, ringtone ring.caf"}

    async def sleep(self) -> dict[str, str]:
        await self.register(self.alice, self.pn_alice, 0)
        await self.register(self.carol, self.pn_carol, 0)
        status, seen = await self._json("GET", "/v1/admin/overview", self._service())
        check(status == 200, f"overview answered {status}")
        check(not seen["registrations"], f"still registered: {seen['registrations']}")
        devices = [d for d in seen["devices"] if d["enabled"]]
        check(len(devices) == 3, f"{len(devices)} push devices, not 3")
        return {"answer": "no binding left, the 3 push devices and their tokens kept"}

    async def parked(self, call: OutgoingCall) -> dict[str, str]:
        first = await call.start()
        check(first.status == 180, f"the caller got {first.status} {first.reason}")
        return {"answer": "180 Ringing"}

    async def call_push(self, token: str, sent: float, mode: str = "") -> dict[str, str]:
        push = await self.standin.next_push(token, "call")
        fields = push.payload
        check(fields.get("caller_number") == "dave", f"caller {fields.get('caller_number')}")
        check(bool(fields.get("pickup_uri")), "no pickup_uri")
        check(fields.get("caller_name") == "Dave", f"caller name {fields.get('caller_name')}")
        out = {"caller": f"{fields['caller_name']} <{fields['caller_uri']}>",
               "call_id": str(fields["call_id"]),
               "ms": f"{(push.at - sent) * 1000:.0f}", "headers": ""}
        if mode:
            headers = push.headers
            check(headers.get("apns-push-type") == mode, f"push type {headers}")
            check(headers.get("apns-topic") == f"{BUNDLE}.voip", f"topic {headers}")
            out["headers"] = f"apns-push-type: voip, apns-topic: {BUNDLE}.voip"
        return out

    async def wake_and_answer(self, phone: Phone, pn: str, call: OutgoingCall, name: str,
                              how: str) -> None:
        s = self.story
        invite = await s.step(f"{name}'s app wakes ({how}) and registers: the parked INVITE "
                              "follows at once (RFC 8599), the SDP untouched",
                              self.woken(phone, pn))
        ok = await s.step(f"{name} answers: Dave gets 200 OK with {name}'s SDP, and ACKs",
                          self.answer(phone, invite, call))
        await s.step("Dave hangs up: BYE → {answer}", self.hang_up(phone, call, ok))

    async def woken(self, phone: Phone, pn: str) -> Message:
        await self.register(phone, pn)
        invite = await phone.next_request("INVITE")
        check(invite.body == OFFER, "the offer was changed on the way")
        check("pn-" not in invite.to_bytes().decode(), "push parameters left the server")
        return invite

    async def answer(self, phone: Phone, invite: Message, call: OutgoingCall) -> Message:
        phone.reply(invite, 180, tag="app")
        phone.reply(invite, 200, ANSWER, tag="app")
        ok = await call.final()
        check(ok.status == 200, f"the caller got {ok.status} {ok.reason}")
        check(ok.body == ANSWER, "the answer was changed on the way")
        call.ack(ok)
        await phone.next_request("ACK")
        return ok

    async def hang_up(self, phone: Phone, call: OutgoingCall, ok: Message) -> dict[str, str]:
        resp = await call.bye(ok)
        check(resp.status == 200, f"BYE answered {resp.status}")
        await phone.next_request("BYE")
        return {"answer": "200 OK"}

    async def alerts_repeat(self) -> dict[str, str]:
        first = await self.standin.next_push(self.alert_b, "call")
        check(first.payload.get("aps", {}).get("sound") == "ring.caf",
              f"sound {first.payload.get('aps')}")
        check(first.headers.get("apns-push-type") == "alert", f"headers {first.headers}")
        index = self.standin.received.index(first) + 1
        again = await self.standin.next_push(self.alert_b, "call", after=index)
        collapse = first.headers.get("apns-collapse-id")
        check(bool(collapse) and again.headers.get("apns-collapse-id") == collapse,
              "a different apns-collapse-id")
        return {"sound": "ring.caf", "repeat": f"{again.at - first.at:.1f}"}

    async def missed(self, call: OutgoingCall) -> dict[str, str]:
        call.cancel()
        final = await call.final()
        check(final.status == 487, f"the caller got {final.status}")
        push = await self.standin.next_push(self.alert_b, "missed_call")
        check(push.payload.get("caller_number") == "dave", f"missed call {push.payload}")
        return {"answer": "487 Request Terminated"}

    async def call_log(self) -> dict[str, str]:
        status, log = await self._json("GET", "/v1/calls?missed=1", self._basic("bob"))
        check(status == 200, f"answered {status}")
        calls = log["calls"]
        check(len(calls) == 1 and calls[0]["missed"], f"call log {calls}")
        return {"count": "1", "caller": calls[0]["caller_uri"]}

    async def send_message(self) -> dict[str, str]:
        resp = await self.dave.message(self.carol.aor, TEXT)
        check(resp.status == 202, f"MESSAGE answered {resp.status} {resp.reason}")
        return {"answer": "202 Accepted"}

    async def message_push(self) -> dict[str, str]:
        push = await self.standin.next_push(self.fcm_c, "message")
        data = push.payload
        check(data.get("preview") == TEXT, f"preview {data.get('preview')!r}")
        check(data.get("unread") == "1", f"unread {data.get('unread')!r} (FCM: strings)")
        self.message_id = str(data["message_id"])
        return {"preview": TEXT, "unread": "1"}

    async def deliver(self) -> dict[str, str]:
        await self.register(self.carol, self.pn_carol)
        message = await self.carol.next_request("MESSAGE")
        check(message.body.decode() == TEXT, f"body {message.body!r}")
        self.carol.reply(message, 200)
        while True:  # the 2xx is marked in the store a moment after it arrives
            status, t = await self._json("GET", f"/v1/admin/messages/{self.message_id}",
                                         self._service())
            if status == 200 and t["events"][-1]["event"] == "delivered":
                break
            await asyncio.sleep(0.02)
        return {"length": str(len(message.body))}

    async def voicemail(self) -> dict[str, str]:
        body = {"user": "alice", "caller_uri": f"sip:dave@{DOMAIN}", "caller_name": "Dave",
                "duration": 23, "new": 1, "old": 0}
        status, box = await self._json("POST", "/v1/voicemail", self._service(), body)
        check(status == 200 and box["pushed"], f"answered {status}: {box}")
        return {"answer": "200, new 1, pushed"}

    async def voicemail_push(self) -> dict[str, str]:
        push: ReceivedPush = await self.standin.next_push(self.alert_a, "voicemail")
        check(push.payload.get("new") == 1, f"payload {push.payload}")
        return {"new": "1", "caller": str(push.payload.get("from_uri")),
                "duration": str(push.payload.get("duration"))}

    async def timeline(self) -> dict[str, str]:
        status, t = await self._json("GET", f"/v1/admin/calls/{self.alice_call}",
                                     self._service())
        check(status == 200, f"answered {status}")
        steps = [e["event"] for e in t["events"]]
        for needed in ("invite in", "parked", "push", "register in", "invite out", "200",
                       "answered"):
            check(needed in steps, f"no {needed!r} in {steps}")
        self.timeline_lines = []
        for e in t["events"]:
            f = e["fields"]
            more = f"device {f['device']}" if "device" in f else ""
            if e["event"] == "push":
                more = f"{f['provider']} {f['type']} → {f['answer']} {f['status']} " \
                       f"({f['ms']} ms)"
            elif e["event"] in ("invite in",):
                more = f"from {f['caller']}"
            elif e["event"] == "answered":
                more = f"by device {f['by']}"
            elif e["event"] == "parked":
                more = f"caller hears 180, rings up to {f['timeout']:g} s"
            self.timeline_lines.append(f"          {e['ms']:8.1f} ms  {e['event']:<12} {more}")
        return {"steps": " → ".join(dict.fromkeys(steps))}


async def run_demo(make_node: NodeFactory, out: TextIO = sys.stdout, stay: bool = False) -> int:
    """The whole story; 0 when every step worked, 1 otherwise. `stay`: then keep the
    node running (until SIGINT or SIGTERM) for a look at its admin page."""
    story = Story(out)
    with tempfile.TemporaryDirectory(prefix="sipwake-demo-") as tmp:
        folder = Path(tmp)
        log_file = folder / "sipwake.log"
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
        root = logging.getLogger()
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        standin = PushStandIn()
        await standin.start()
        cfg = demo_config(folder, standin)
        story.say("sipwake demo: a node on the embedded defaults with local stand-ins for "
                  "APNs and FCM,\nand simulated apps: Alice (iPhone, VoIP), Bob (iPhone, "
                  "alert mode), Carol (Android), Dave (desk phone)")
        node: Node | None = None
        demo: Demo | None = None
        try:
            story.chapter("0. Setting up")
            await add_users(cfg, ["alice", "bob", "carol", "dave"])
            node = make_node(cfg)
            await story.step(f"sipwake serving {DOMAIN}: SIP {cfg.sip.listen[0]}, HTTP "
                             f"{cfg.http.listen}, SQLite in {folder}", node.start())
            await story.step(f"APNs and FCM stand-ins (HTTP/2) on {standin.url}, FCM's "
                             f"OAuth token endpoint on {standin.token_url}",
                             _nothing())
            async with aiohttp.ClientSession() as http:
                demo = Demo(story, cfg, standin, http)
                await demo.start()
                await demo.run()
                if stay:
                    await _stay(story, cfg)
        except StepFailed:
            story.say(f"\n✗ the story stopped after {story.steps} steps; the node's log "
                      "ends:")
            for line in log_file.read_text().splitlines()[-15:]:
                story.say(f"    {line}")
            return 1
        finally:
            if demo is not None:
                demo.close()
            if node is not None:
                await node.stop()
            await standin.close()
            root.removeHandler(handler)
            root.setLevel(level)
            handler.close()
    story.say(f"\n✓ every step worked: {story.steps} steps in "
              f"{time.monotonic() - story.t0:.1f} s. To watch it live:\n"
              "  SIPWAKE_HTTP_API_TOKEN=s3cret sipwake serve, then open "
              "http://127.0.0.1:8080/admin#token=s3cret")
    return 0


async def _stay(story: Story, cfg: Config) -> None:
    story.say(f"\nThe node stays up (Ctrl-C ends it). Its admin page:\n"
              f"  http://{cfg.http.listen}/admin#token={cfg.http.api_token}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _nothing() -> None:
    return None
