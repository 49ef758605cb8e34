"""GET /v1/messages and POST /v1/messages/ack: auth, paging, acks, other users' ids."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.helpers.messaging import BOB, TEXT, Handset, cpim, send, setup
from tests.helpers.node import Running, ServerFactory, instance_id

Auth = dict[str, str] | None
BOB_AUTH = {"Authorization": aiohttp.encode_basic_auth("bob", "secret")}
ALICE_AUTH = {"Authorization": aiohttp.encode_basic_auth("alice", "secret")}


def url(r: Running, path: str) -> str:
    assert r.server.http is not None
    return f"http://127.0.0.1:{r.server.http.port}{path}"


async def get(r: Running, path: str, auth: Auth) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url(r, path), headers=auth) as resp:
        return resp.status, await resp.json()


async def post(r: Running, path: str, body: Any, auth: Auth) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url(r, path), json=body,
                                                          headers=auth) as resp:
        return resp.status, await resp.json()


async def test_download_page_by_page_and_ack(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server)
    await send(alice, "bob", "plain ✓".encode())
    await send(alice, "bob", cpim("in cpim", "api-1"), "message/cpim")
    await send(alice, "bob", b"\xff\xfe not utf-8", "application/octet-stream")

    status, page = await get(r, "/v1/messages?limit=2", BOB_AUTH)
    assert status == 200 and page["more"] is True and len(page["messages"]) == 2
    first, second = page["messages"]
    assert first["body"] == "plain ✓" and first["content_type"] == TEXT
    assert first["from_uri"] == "sip:alice@example.com" and first["from_number"] == "alice"
    assert second["imdn_message_id"] == "api-1" and second["from_name"] == "Alice A."
    assert first["delivered"] is False and first["id"] < second["id"]
    status, rest = await get(r, f"/v1/messages?after={page['next_after']}&limit=2", BOB_AUTH)
    assert status == 200 and rest["more"] is False
    (third,) = rest["messages"]
    assert third["body_base64"] == "//4gbm90IHV0Zi04" and "body" not in third

    status, result = await post(r, "/v1/messages/ack", {"ids": [first["id"], second["id"]]},
                                BOB_AUTH)
    assert status == 200 and result == {"acked": [first["id"], second["id"]], "unknown": []}
    assert await r.server.store.unread_count(BOB) == 1
    # acknowledged messages are not sent over SIP any more
    phone = Handset(await r.phone("bob"))
    await phone.agent.register(header_params=f';+sip.instance="<{instance_id()}>"')
    assert [m.body for m in await phone.wait_for(1)] == [b"\xff\xfe not utf-8"]
    status, after = await get(r, "/v1/messages", BOB_AUTH)
    assert [m["acked"] for m in after["messages"]] == [True, True, False]


async def test_auth_and_other_users_ids(start_server: ServerFactory) -> None:
    r, alice = await setup(start_server)
    await send(alice, "bob", b"for bob")
    (bobs,) = await r.server.store.messages(BOB)
    assert (await get(r, "/v1/messages", None))[0] == 401
    assert (await get(r, "/v1/messages", {"Authorization": aiohttp.encode_basic_auth("bob", "wrong")}))[0] == 401
    assert (await post(r, "/v1/messages/ack", {"ids": [bobs.id]}, None))[0] == 401
    # alice sees none of bob's messages and cannot acknowledge them
    status, page = await get(r, "/v1/messages", ALICE_AUTH)
    assert status == 200 and page == {"messages": [], "next_after": 0, "more": False}
    status, result = await post(r, "/v1/messages/ack", {"ids": [bobs.id, 424242]}, ALICE_AUTH)
    assert status == 200 and result == {"acked": [], "unknown": [bobs.id, 424242]}
    assert (await r.server.store.messages(BOB))[0].acked_at == 0


async def test_bad_requests(start_server: ServerFactory) -> None:
    r, _ = await setup(start_server)
    for query in ("limit=0", "limit=501", "limit=x", "after=-1"):
        status, error = await get(r, f"/v1/messages?{query}", BOB_AUTH)
        assert status == 422 and error["field"] in ("limit", "after"), query
    for body in ({"ids": "1"}, {"ids": [1, "2"]}, {"ids": [True]}, {"ids": [0]},
                 {"ids": list(range(1, 1002))}):
        status, error = await post(r, "/v1/messages/ack", body, BOB_AUTH)
        assert status == 422 and error["field"] == "ids", body
    status, _ = await post(r, "/v1/messages/ack", [1, 2], BOB_AUTH)
    assert status == 400


async def test_paging_while_messages_arrive(start_server: ServerFactory) -> None:
    """The app pages with after=<last id> while a burst is being stored: it ends up
    with every message exactly once, in order."""
    r, alice = await setup(start_server, sender_rate=0.0)
    sending = asyncio.ensure_future(
        asyncio.gather(*(send(alice, "bob", f"m{i}".encode()) for i in range(60)))
    )
    seen: list[str] = []
    after = 0
    while True:
        finished = sending.done()
        _, page = await get(r, f"/v1/messages?after={after}&limit=7", BOB_AUTH)
        seen += [m["body"] for m in page["messages"]]
        after = page["next_after"]
        if finished and not page["more"]:
            break
    assert all(resp.status == 202 for resp in await sending)
    assert sorted(seen) == sorted(f"m{i}" for i in range(60)) and len(seen) == 60
