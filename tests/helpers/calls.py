"""Calls against a node under test (tests/helpers/node.py): a callee's phone with its
push token that went to sleep, its waking, and reading the pushes the dev sink got."""

from __future__ import annotations

from typing import Any

from tests.helpers.agent import Agent
from tests.helpers.node import DOMAIN, Running, instance_id
from tests.helpers.wait import wait_for

VOIP = "a1" * 32
APNS = f";pn-provider=apns;pn-prid={VOIP};pn-param=ABCD123456.com.example.dialer.voip"
FCM = ";pn-provider=fcm;pn-prid=fcm-token-1;pn-param=my-project"
OFFER = b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=candidate:1 1 UDP 2130706431 127.0.0.1 40000 typ host\r\n"
TRUSTED: dict[str, Any] = {"trusted_peers": ["127.0.0.1"]}


def payload_type(entry: dict[str, Any]) -> str:
    payload = entry["payload"]
    if entry["provider"] == "fcm":
        return str(payload["data"]["type"])
    return str(payload["type"])


async def sleeping_ios(r: Running, user: str = "alice", params: str = APNS) -> Agent:
    """A phone that registered its push token, then went to sleep (Expires: 0)."""
    phone = await r.phone(user)
    inst = instance_id()
    phone.instance = inst  # type: ignore[attr-defined]
    assert (await phone.register(params=params, header_params=f';+sip.instance="<{inst}>"')).status == 200
    assert (await phone.register(params=params, header_params=f';+sip.instance="<{inst}>"', expires=0)).status == 200
    assert r.server.registrar.live_bindings(f"sip:{user}@{DOMAIN}") == []
    return phone


async def wake(r: Running, phone: Agent, params: str = APNS) -> None:
    inst = phone.instance  # type: ignore[attr-defined]
    assert (await phone.register(params=params, header_params=f';+sip.instance="<{inst}>"')).status == 200


def sink_of(r: Running, kind: str) -> list[dict[str, Any]]:
    sink = r.server.push.sink
    assert sink is not None
    return [p for p in reversed(sink.pushes()) if payload_type(p) == kind]


async def wait_push(r: Running, kind: str, count: int = 1) -> list[dict[str, Any]]:
    await wait_for(lambda: len(sink_of(r, kind)) >= count)
    return sink_of(r, kind)


def call_fields(entry: dict[str, Any]) -> dict[str, Any]:
    payload = entry["payload"]
    return dict(payload["data"]) if entry["provider"] == "fcm" else dict(payload)
