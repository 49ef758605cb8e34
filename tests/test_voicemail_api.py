"""The voicemail webhook `POST /v1/voicemail`: service token, validation naming the
field, state stored, one push per new voicemail, subscribers told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sipwake.voicemail.summary import Counts, parse
from tests.helpers.node import DOMAIN, Running, ServerFactory
from tests.helpers.voicemail import Subscriber, add_ios_device, voicemail_pushes

TOKEN = "service-token-123"
ALICE = f"sip:alice@{DOMAIN}"


@pytest.fixture
async def running(start_server: ServerFactory) -> Running:
    r = await start_server(http={"api_token": TOKEN})
    await r.add_user("alice")
    return r


@pytest.fixture
async def post(running: Running) -> AsyncIterator[Any]:
    assert running.server.http is not None
    url = f"http://127.0.0.1:{running.server.http.port}/v1/voicemail"
    async with aiohttp.ClientSession() as session:

        async def call(body: Any, token: str | None = TOKEN, raw: bytes | None = None
                       ) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            if raw is None:
                async with session.post(url, json=body, headers=headers) as resp:
                    return resp.status, await resp.json()
            headers["Content-Type"] = "application/json"
            async with session.post(url, data=raw, headers=headers) as resp:
                return resp.status, await resp.json()

        yield call


VOICEMAIL = {"user": "alice", "caller_uri": "sip:+15551234@example.com",
             "caller_name": "Bob Builder", "duration": 42, "new": 1, "old": 0}  # fmt: skip


async def test_webhook_stores_and_pushes_once_per_new_voicemail(running: Running, post: Any
                                                                ) -> None:
    await add_ios_device(running, "alice")
    status, body = await post(VOICEMAIL)
    assert status == 200, body
    assert body == {"user": ALICE, "waiting": True, "new": 1, "old": 0, "urgent_new": 0,
                    "urgent_old": 0, "pushed": True}  # fmt: skip
    await running.server.voicemail.settled()
    (push,) = voicemail_pushes(running)
    payload = push["payload"]
    assert isinstance(payload, dict)
    assert (payload["from_uri"], payload["from_name"], payload["duration"], payload["new"],
            payload["old"]) == ("sip:+15551234@example.com", "Bob Builder", 42, 1, 0)  # fmt: skip

    # repeated report, old-only change, new dropping: no push
    for change in ({}, {"old": 3}, {"new": 0, "old": 4}):
        status, body = await post({**VOICEMAIL, **change})
        assert status == 200 and body["pushed"] is False, body
    status, body = await post({**VOICEMAIL, "user": ALICE, "new": 2, "old": 4})  # AOR form
    assert status == 200 and body["pushed"] is True
    await running.server.voicemail.settled()
    assert len(voicemail_pushes(running)) == 2
    m = await running.server.store.get_mailbox(ALICE)
    assert m is not None and (m.waiting, m.new_count, m.old_count) == (True, 2, 4)


async def test_webhook_needs_the_service_token(running: Running, post: Any) -> None:
    for token in (None, "wrong"):
        status, body = await post(VOICEMAIL, token=token)
        assert status == 401 and body["error"] == "unauthorized"
    assert await running.server.store.get_mailbox(ALICE) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"user": None}, "user"),
        ({"new": None}, "new"),
        ({"old": None}, "old"),
        ({"new": "2"}, "new"),
        ({"new": -1}, "new"),
        ({"old": True}, "old"),
        ({"new": 1.5}, "new"),
        ({"duration": "42s"}, "duration"),
        ({"urgent_new": 2**31}, "urgent_new"),
        ({"caller_name": 7}, "caller_name"),
        ({"caller_uri": "x" * 3000}, "caller_uri"),
        ({"caller_name": "Bob\r\nX-Injected: 1"}, "caller_name"),
        ({"waiting": "yes"}, "waiting"),
        ({"account": "not a uri"}, "account"),
        ({"user": ""}, "user"),
        ({"colour": "blue"}, "colour"),
    ],
)  # fmt: skip
async def test_webhook_validation_names_the_field(
    running: Running, post: Any, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**VOICEMAIL, **change}.items() if v is not None}
    status, answer = await post(body)
    assert status == 422, answer
    assert answer["error"] == "invalid" and answer["field"] == field, answer
    assert await running.server.store.get_mailbox(ALICE) is None


async def test_webhook_refuses_bad_json_and_unknown_users(running: Running, post: Any) -> None:
    status, body = await post(None, raw=b"{not json")
    assert status == 400 and body["error"] == "bad_json"
    status, body = await post(None, raw=b"[1, 2]")
    assert status == 400 and body["error"] == "bad_json"
    status, body = await post({**VOICEMAIL, "user": "nobody"})
    assert status == 404 and body["field"] == "user"


async def test_webhook_change_reaches_subscribed_device(running: Running, post: Any) -> None:
    phone = await running.phone("alice")
    sub = Subscriber(phone)
    assert (await sub.subscribe(600)).status == 200
    assert parse((await sub.notified()).body).voice == Counts(0, 0)
    status, _ = await post({**VOICEMAIL, "new": 3, "old": 1, "urgent_new": 1,
                            "account": "sip:vm@vm.example.com"})  # fmt: skip
    assert status == 200
    s = parse((await sub.notified()).body)
    assert (s.waiting, s.account, s.voice) == (True, "sip:vm@vm.example.com", Counts(3, 1, 1, 0))
    await running.server.voicemail.settled()
