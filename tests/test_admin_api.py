"""The admin JSON behind `/admin`: service token only, a parked call's timeline from
INVITE to answer (push per device with the provider's answer and latency), a message's
from stored to delivered, the overview's lists with tokens masked, bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.helpers.agent import Agent, Dialer, next_request, respond
from tests.helpers.node import DOMAIN, Running, ServerFactory, instance_id
from tests.helpers.wait import wait_for

TOKEN = "admin-token-123"
VOIP = "a1" * 32
APNS = f";pn-provider=apns;pn-prid={VOIP};pn-param=ABCD123456.com.example.dialer.voip"
OFFER = b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=callee 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n"


@pytest.fixture
async def node(start_server: ServerFactory) -> Running:
    r = await start_server(http={"api_token": TOKEN}, sip={"trusted_peers": ["127.0.0.1"]},
                           calls={"park_timeout": 5})
    await r.add_user("alice")
    await r.add_user("bob")
    return r


@pytest.fixture
async def get(node: Running) -> AsyncIterator[Any]:
    assert node.server.http is not None
    base = f"http://127.0.0.1:{node.server.http.port}"
    async with aiohttp.ClientSession() as session:

        async def call(path: str, token: str | None = TOKEN) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with session.get(base + path, headers=headers) as resp:
                if resp.content_type == "application/json":
                    return resp.status, await resp.json()
                return resp.status, await resp.text()

        yield call


async def sleeping(node: Running, user: str = "alice") -> tuple[Agent, str]:
    """A phone that registered its VoIP token with an instance id, then slept."""
    phone = await node.phone(user)
    inst = f';+sip.instance="<{instance_id()}>"'
    assert (await phone.register(params=APNS, header_params=inst)).status == 200
    assert (await phone.register(params=APNS, header_params=inst, expires=0)).status == 200
    return phone, inst


async def test_without_the_service_token_no_data(get: Any) -> None:
    for path in ("/v1/admin/overview", "/v1/admin/timeline", "/v1/admin/calls/x",
                 "/v1/admin/messages/1"):
        for token in (None, "wrong", f"{TOKEN}x"):
            status, body = await get(path, token)
            assert status == 401 and body["error"] == "unauthorized", (path, token)
    status, page = await get("/admin", None)  # the page holds no data: served to anyone
    assert status == 200 and "<title>sipwake" in page and TOKEN not in page
    status, _ = await get("/admin/admin.js", None)
    assert status == 200
    assert (await get("/admin/../server.py", None))[0] == 404


async def test_parked_call_timeline_from_invite_to_answer(node: Running, get: Any) -> None:
    phone, inst = await sleeping(node)
    caller = await node.phone("bob")
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    await dial.provisional(180)
    (call_id,) = node.server.calls.calls
    await wait_for(lambda: "push" in events(node, call_id))
    status, over = await get("/v1/admin/overview")
    assert status == 200
    (ringing,) = over["calls"]
    assert ringing["call_id"] == call_id and ringing["parked"] and ringing["pushed"] == 1
    (device,) = [d for d in over["devices"] if d["user"] == f"sip:alice@{DOMAIN}"]
    assert VOIP not in str(over) and device["voip_token"] == f"{VOIP[:6]}…{VOIP[-4:]}"
    assert over["providers"][0]["name"] == "sink" and over["providers"][0]["delivered"] >= 1
    (push,) = [p for p in over["pushes"] if p["type"] == "call"]
    assert push["answer"] == "delivered" and push["provider"] == "sink"
    # the app wakes: REGISTER in → INVITE out → 200 → answered
    assert (await phone.register(params=APNS, header_params=inst)).status == 200
    invite = await next_request(phone, "INVITE")
    respond(phone, invite, 180, tag="dev")
    respond(phone, invite, 200, ANSWER, tag="dev")
    ok = await dial.final()
    assert ok.status == 200
    dial.ack(ok)
    status, timeline = await get(f"/v1/admin/calls/{call_id}")
    assert status == 200 and timeline["kind"] == "call" and timeline["key"] == call_id
    steps = [e["event"] for e in timeline["events"]]
    assert steps == ["invite in", "parked", "push", "register in", "invite out", "180", "200",
                     "answered"]
    push_event = timeline["events"][2]["fields"]
    assert push_event["answer"] == "delivered" and push_event["provider"] == "sink"
    assert push_event["type"] == "call" and isinstance(push_event["ms"], float)
    ms = [e["ms"] for e in timeline["events"]]
    assert ms == sorted(ms) and ms[0] == 0.0
    assert timeline["summary"]["callee"] == f"sip:alice@{DOMAIN}"
    status, over = await get("/v1/admin/overview")
    assert over["calls"] == [] and over["recent_calls"][0]["state"] == "answered"
    assert any(r["user"] == f"sip:alice@{DOMAIN}" for r in over["registrations"])
    assert VOIP not in str(over)
    status, listed = await get("/v1/admin/timeline?kind=call&limit=1")
    assert status == 200 and [t["key"] for t in listed["items"]] == [call_id]
    assert (await get("/v1/admin/calls/nope"))[0] == 404
    assert (await get("/v1/admin/timeline?kind=bad"))[0] == 400


async def test_missed_call_ends_the_timeline_as_missed(node: Running, get: Any) -> None:
    await sleeping(node)
    dial = Dialer(await node.phone("bob"), f"sip:alice@{DOMAIN}", OFFER)
    dial.start()
    await dial.provisional(180)
    (call_id,) = node.server.calls.calls
    dial.cancel()
    assert (await dial.final()).status == 487
    await wait_for(lambda: events(node, call_id).count("push") >= 2)  # call, missed_call
    status, timeline = await get(f"/v1/admin/calls/{call_id}")
    assert status == 200
    end = next(e for e in timeline["events"] if e["event"] == "end")
    assert end["fields"]["outcome"] == "cancelled" and end["fields"]["missed"] is True
    kinds = [e["fields"]["type"] for e in timeline["events"] if e["event"] == "push"]
    assert kinds == ["call", "missed_call"]


async def test_message_timeline_stored_pushed_delivered(node: Running, get: Any) -> None:
    phone, inst = await sleeping(node)
    sender = await node.phone("bob")
    resp = await sender.request("MESSAGE", f"sip:alice@{DOMAIN}",
                                {"Content-Type": "text/plain"}, b"hello there")
    assert resp.status == 202
    status, over = await get("/v1/admin/overview")
    assert over["inbox"] == [{"user": f"sip:alice@{DOMAIN}", "unread": 1}]
    (message,) = await node.server.store.messages(f"sip:alice@{DOMAIN}")
    assert (await phone.register(params=APNS, header_params=inst)).status == 200
    respond(phone, await next_request(phone, "MESSAGE"), 200)
    await wait_for(lambda: "delivered" in events(node, str(message.id), "message"))
    status, timeline = await get(f"/v1/admin/messages/{message.id}")
    assert status == 200
    steps = [e["event"] for e in timeline["events"]]
    assert steps[:2] == ["stored", "answered 202"] and steps[-1] == "delivered"
    assert "hello there" not in str(timeline)  # no message text on the timeline


async def test_lists_are_bounded(node: Running, get: Any) -> None:
    for i in range(5):
        await node.add_user(f"u{i}")
        assert (await (await node.phone(f"u{i}")).register()).status == 200
    status, over = await get("/v1/admin/overview?limit=2")
    assert status == 200 and len(over["registrations"]) == 2 and over["registered_users"] == 5
    assert (await get("/v1/admin/overview?limit=x"))[0] == 400


def events(node: Running, key: str, kind: str = "call") -> list[str]:
    entry = node.server.timeline.get(kind, key)
    return [e.event for e in entry.events] if entry is not None else []
