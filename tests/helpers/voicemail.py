"""SIP helpers for the voicemail tests: a voicemail server's NOTIFY, a device's
SUBSCRIBE dialog, answering the server's requests. Built on tests/helpers/agent.py."""

from __future__ import annotations

import asyncio
import secrets

from sipwake.sip.message import Message, make_response
from sipwake.store.models import Device
from tests.helpers.agent import Agent, digest_header
from tests.helpers.node import DOMAIN, Running

CT = "application/simple-message-summary"
ALERT_TOKEN = "a1" * 32
BUNDLE = "com.example.dialer"


def summary(
    new: int,
    old: int,
    *,
    waiting: bool | None = None,
    caller: str = '"Bob Builder" <sip:+15551234@example.com>',
    duration: int | None = 42,
) -> bytes:
    """A voicemail server's message-summary body, with the newest message's headers."""
    waiting = new > 0 if waiting is None else waiting
    lines = [f"Messages-Waiting: {'yes' if waiting else 'no'}",
             "Message-Account: sip:vm@vm.example.com",
             f"Voice-Message: {new}/{old} (0/0)"]  # fmt: skip
    if caller:
        lines += ["", f"From: {caller}", "Subject: voicemail"]
        if duration is not None:
            lines.append(f"Content-Duration: {duration}")
    return ("\r\n".join(lines) + "\r\n").encode()


def build(
    agent: Agent,
    method: str,
    uri: str,
    *,
    to: str,
    call_id: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[bytes, str]:
    """Like Agent.build, with the To (and its tag) and Call-ID given."""
    agent.cseq += 1
    branch = f"z9hG4bK{secrets.token_hex(8)}"
    host, port = agent.local
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{agent.transport.upper()} {host}:{port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{agent.user}@{agent.domain}>;tag={agent.tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {agent.cseq} {method}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, branch


async def send(
    agent: Agent,
    method: str,
    uri: str,
    *,
    to: str,
    call_id: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 5.0,
) -> Message:
    """Send a request (answering one digest challenge) and return the final response."""
    call_id = call_id or f"{secrets.token_hex(6)}@test"
    data, branch = build(agent, method, uri, to=to, call_id=call_id, headers=headers, body=body)
    resp = await agent._transact(data, branch, timeout)
    if resp.status == 407:
        challenge = resp.get("Proxy-Authenticate")
        assert challenge is not None
        hdrs = dict(headers or {})
        hdrs["Proxy-Authorization"] = digest_header(
            challenge, method, uri, agent.auth_user or agent.user, agent.password
        )
        data, branch = build(agent, method, uri, to=to, call_id=call_id, headers=hdrs, body=body)
        resp = await agent._transact(data, branch, timeout)
    return resp


async def notify(
    agent: Agent, user: str, body: bytes, headers: dict[str, str] | None = None
) -> Message:
    """A voicemail server's message-summary NOTIFY to a user's AOR."""
    hdrs = {"Event": "message-summary", "Subscription-State": "active", "Content-Type": CT}
    hdrs.update(headers or {})
    aor = f"sip:{user}@{DOMAIN}"
    return await send(agent, "NOTIFY", aor, to=f"<{aor}>", headers=hdrs, body=body)


async def next_request(agent: Agent, method: str = "NOTIFY", timeout: float = 5.0) -> Message:
    async with asyncio.timeout(timeout):
        while True:
            request = await agent.requests.get()
            if request.method == method:
                return request


def respond(agent: Agent, request: Message, status: int = 200) -> None:
    resp = make_response(request, status, to_tag=None if request.to_tag else agent.tag)
    agent.send_raw(resp.to_bytes())


def no_request(agent: Agent) -> bool:
    return agent.requests.empty()


class Subscriber:
    """One SUBSCRIBE dialog of a device to a mailbox (RFC 6665, as the UAC)."""

    def __init__(self, agent: Agent, mailbox_user: str | None = None) -> None:
        self.agent = agent
        self.aor = f"sip:{mailbox_user or agent.user}@{DOMAIN}"
        self.call_id = f"{secrets.token_hex(6)}@sub"
        self.to_tag = ""
        self.target = self.aor  # the notifier's Contact once the dialog exists

    async def subscribe(self, expires: int = 600, **headers: str) -> Message:
        to = f"<{self.aor}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        hdrs = {"Event": "message-summary", "Accept": CT, "Contact": self.agent.contact(),
                "Expires": str(expires)}  # fmt: skip
        hdrs.update(headers)
        resp = await send(self.agent, "SUBSCRIBE", self.target, to=to, call_id=self.call_id,
                          headers=hdrs)  # fmt: skip
        if resp.status == 200 and not self.to_tag:
            self.to_tag = resp.to_tag
            self.target = str(resp.contacts[0].uri)
        return resp

    async def notified(self, status: int = 200, timeout: float = 5.0) -> Message:
        """The next NOTIFY in this dialog, answered with `status`."""
        request = await next_request(self.agent, timeout=timeout)
        assert request.call_id == self.call_id, request
        assert request.from_tag == self.to_tag and request.to_tag == self.agent.tag
        respond(self.agent, request, status)
        return request


async def add_ios_device(running: Running, user: str, device_id: str = "iphone",
                         **fields: object) -> Device:
    """A push device of `user` uploaded before (as the device API would store it)."""
    device = Device(device_id=device_id, aor=f"sip:{user}@{DOMAIN}", provider="apns",
                    platform="ios", push_token=ALERT_TOKEN, topic=BUNDLE, call_mode="alert",
                    **fields)  # type: ignore[arg-type]
    await running.server.store.put_device(device)
    return device


def voicemail_pushes(running: Running) -> list[dict[str, object]]:
    """Voicemail pushes the developer sink has seen, oldest first."""
    sink = running.server.push.sink
    assert sink is not None
    return [p for p in reversed(sink.pushes()) if p["type"] == "voicemail"]
