"""The HTTP API on its own: bodies declared once (validation wording, the published
schemas) and the handlers on in-memory fakes, with no `Server` behind them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import HTTPException

from sipwake.api.devices import DeviceInput
from sipwake.api.http import ApiDeps, ApiSettings, HttpApi
from sipwake.api.jsonapi import convert
from sipwake.api.messages import AckInput
from sipwake.api.openapi import spec
from sipwake.api.tokens import TokenRequest
from sipwake.api.voicemail import VoicemailReport
from sipwake.auth import HttpRefusal
from sipwake.metrics import Metrics
from sipwake.store.errors import StoreUnavailable
from sipwake.store.models import CallRecord, Device, InboxMessage, Mailbox, User
from sipwake.voicemail import Report
from tests.helpers.api import basic

ALICE = User("alice", "example.com", "0" * 32, "0" * 64)
VM = {"user": "alice", "new": 1, "old": 0}


def refusal(kind: type[Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(HTTPException) as caught:
        convert(body, kind)
    assert caught.value.text is not None
    return caught.value.status, json.loads(caught.value.text)


@pytest.mark.parametrize(
    ("kind", "body", "field", "detail"),
    [
        (DeviceInput, {"platform": "ios", "colour": 1}, "colour",
         "unknown field (accepted: platform, push_token, voip_token, topic, sandbox, "
         "call_mode, ringtone, locale, privacy, instance)"),
        (DeviceInput, {}, "platform", "required"),
        (DeviceInput, {"platform": 1}, "platform", "must be a string, got a number"),
        (DeviceInput, {"platform": "windows"}, "platform",
         "must be one of android, ios, got 'windows'"),
        (DeviceInput, {"platform": "ios", "sandbox": 1}, "sandbox",
         "must be true or false, got a number"),
        (DeviceInput, {"platform": "ios", "topic": "a" * 256}, "topic",
         "longer than 255 characters"),
        (DeviceInput, {"platform": "ios", "topic": "com.example/x"}, "topic",
         "does not match [A-Za-z0-9][A-Za-z0-9._-]*"),
        # a pattern is matched whole: Python's $ would let a trailing newline through
        (DeviceInput, {"platform": "ios", "topic": "com.example\n"}, "topic",
         "does not match [A-Za-z0-9][A-Za-z0-9._-]*"),
        (TokenRequest, {"scope": "admin"}, "scope", "must be one of all, devices, got 'admin'"),
        (TokenRequest, {"scope": None}, "scope", "must be a string, got null"),
        (AckInput, {"ids": "1"}, "ids", "must be a list, got a string"),
        (AckInput, {"ids": [1, True]}, "ids", "item 1: must be an integer, got a boolean"),
        (AckInput, {"ids": [0]}, "ids", "item 0: must be an integer of at least 1"),
        (AckInput, {"ids": list(range(1, 1002))}, "ids", "at most 1000 items"),
        (VoicemailReport, {**VM, "new": -1}, "new", "must be an integer from 0 to 2147483647"),
        (VoicemailReport, {**VM, "old": 1.5}, "old", "must be an integer, got a number"),
        (VoicemailReport, {**VM, "caller_name": "a\nb"}, "caller_name",
         "must not contain control characters"),
        (VoicemailReport, {**VM, "waiting": "yes"}, "waiting",
         "must be true or false, got a string"),
        (VoicemailReport, {"new": 1, "old": 0, "caller_name": 7}, "user", "required"),
    ],
)  # fmt: skip
def test_validation_names_the_field_in_the_declarations_words(
    kind: type[Any], body: dict[str, Any], field: str, detail: str
) -> None:
    status, doc = refusal(kind, body)
    assert status == 422
    assert doc == {"error": "invalid", "field": field, "detail": detail}


def test_valid_bodies_and_defaults() -> None:
    device = convert({"platform": "android", "push_token": "t"}, DeviceInput)
    assert (device.topic, device.sandbox, device.privacy) == ("", False, False)
    assert convert({}, TokenRequest).scope == "all"
    assert convert({"ids": [3, 1], "ignored": True}, AckInput).ids == [3, 1]  # as before
    assert convert({**VM, "waiting": None}, VoicemailReport).waiting is None


def test_published_schemas_come_from_the_structs() -> None:
    schemas = spec()["components"]["schemas"]
    topic = schemas["DeviceInput"]["properties"]["topic"]
    assert topic["pattern"] == "^(?:[A-Za-z0-9][A-Za-z0-9._-]*)?$"  # ECMA-262, not \Z
    assert topic["maxLength"] == 255 and topic["type"] == "string"
    assert schemas["DeviceInput"]["properties"]["platform"] == {
        "type": "string", "enum": ["android", "ios"],
        "description": "`ios` (pushed through APNs) or `android` (FCM).",
    }  # fmt: skip
    assert schemas["DeviceInput"]["additionalProperties"] is False
    assert "additionalProperties" not in schemas["AckInput"]  # unknown keys are ignored
    assert schemas["AckInput"]["properties"]["ids"]["maxItems"] == 1000
    assert schemas["Message"]["oneOf"] == [{"required": ["body"]}, {"required": ["body_base64"]}]
    assert schemas["Error"]["required"] == ["error", "field", "detail"]
    assert "\\Z" not in json.dumps(spec())


# ------------------------------------------------------------- handlers on fakes
class Challenges:
    def challenges(self, stale: bool = False) -> list[str]:
        return ['Digest realm="example.com", nonce="n", algorithm=MD5, qop="auth"']


class Admission:
    digest = Challenges()

    async def http_basic(self, ip: str, username: str, password: str) -> User | HttpRefusal:
        if (username, password) == ("alice", "secret"):
            return ALICE
        return HttpRefusal("wrong user or password")

    async def http_digest(self, ip: str, header: str, method: str, path: str
                          ) -> User | HttpRefusal:
        return HttpRefusal("malformed Digest credentials")


class Users:
    async def get(self, username: str, domain: str) -> User | None:
        return ALICE if username == "alice" else None


@dataclass
class Store:
    devices_by_id: dict[str, Device] = field(default_factory=dict)
    down: bool = False

    async def get_device(self, device_id: str) -> Device | None:
        return self.devices_by_id.get(device_id)

    async def devices(self, aor: str) -> list[Device]:
        return [d for d in self.devices_by_id.values() if d.aor == aor]

    async def delete_device(self, device_id: str) -> bool:
        return self.devices_by_id.pop(device_id, None) is not None

    async def revoke_token(self, token_id: str, expires_at: float) -> None: ...

    async def token_revoked(self, token_id: str) -> bool:
        return False

    async def calls(self, aor: str, missed_only: bool = False, limit: int = 100
                    ) -> list[CallRecord]:
        return [CallRecord("c1", aor, "sip:bob@example.com", "bob", "Bob", 10.5, 20.0)]

    async def messages(self, aor: str, after: int = 0, limit: int = 100) -> list[InboxMessage]:
        return []

    async def ack_messages(self, aor: str, ids: Sequence[int], at: float) -> list[int]:
        return [i for i in ids if i == 7]

    async def get_user(self, username: str, domain: str) -> User | None:
        if self.down:
            raise StoreUnavailable("unreachable", OSError("connection refused"))
        return ALICE if username == "alice" else None


@dataclass
class Registry:
    """The device owner: deletes go through it to the store."""

    store: Store
    saved: list[Device] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    async def save_device(self, device: Device) -> None:
        self.saved.append(device)

    async def delete_device(self, device_id: str) -> bool:
        self.deleted.append(device_id)
        return await self.store.delete_device(device_id)


@dataclass
class Inbox:
    delivered: list[str] = field(default_factory=list)

    def messages_delivered(self, aor: str) -> None:
        self.delivered.append(aor)


class Calls:
    def decline(self, call_id: str, user: User) -> str:
        return {"ringing": "declined", "old": "gone", "bobs": "forbidden"}.get(call_id, "unknown")

    async def logged(self) -> None:
        pass


@dataclass
class Change:
    mailbox: Mailbox
    rose: bool


class Voicemail:
    async def report(self, aor: str, report: Report) -> Change:
        assert report.voice is not None
        return Change(Mailbox(aor, True, new_count=report.voice.new), rose=True)


@dataclass
class Fakes:
    client: TestClient[Any, Any]
    store: Store
    registry: Registry
    inbox: Inbox


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    store = Store()
    registry, inbox = Registry(store), Inbox()
    deps = ApiDeps(
        settings=ApiSettings("example.com", "example.com", "svc", 3600, b"k"),
        store=store, admission=Admission(), users=Users(), registry=registry, inbox=inbox,
        calls=Calls(), voicemail=Voicemail(), sink=None, metrics=Metrics(),
        counts={"calls": lambda: {"ringing": 0}},
    )  # fmt: skip
    client = TestClient(TestServer(HttpApi(deps).app))
    await client.start_server()
    yield Fakes(client, store, registry, inbox)
    await client.close()


BASIC = basic("alice")


async def test_handlers_use_only_what_they_are_given(fakes: Fakes) -> None:
    c = fakes.client
    resp = await c.put("/v1/devices/p", headers=BASIC,
                       json={"platform": "android", "push_token": "t", "locale": None})
    assert resp.status == 201 and resp.headers["Location"] == "/v1/devices/p"
    (saved,) = fakes.registry.saved
    assert (saved.aor, saved.provider, saved.call_mode) == ("sip:alice@example.com", "fcm",
                                                            "alert")
    fakes.store.devices_by_id["p"] = saved
    assert [d["device_id"] for d in (await (await c.get("/v1/devices", headers=BASIC)).json())
            ["devices"]] == ["p"]  # fmt: skip
    assert (await c.delete("/v1/devices/p", headers=BASIC)).status == 204
    assert fakes.registry.deleted == ["p"]

    resp = await c.post("/v1/messages/ack", headers=BASIC, json={"ids": [7, 8, 8]})
    assert await resp.json() == {"acked": [7], "unknown": [8]}
    assert fakes.inbox.delivered == ["sip:alice@example.com"]

    (call,) = (await (await c.get("/v1/calls", headers=BASIC)).json())["calls"]
    assert (call["at"], call["ended_at"], call["caller_name"]) == (10, 20, "Bob")
    for call_id, status in (("ringing", 200), ("old", 410), ("bobs", 404), ("x", 404)):
        resp = await c.post(f"/v1/calls/{call_id}/decline", headers=BASIC)
        assert resp.status == status, call_id
    assert await resp.json() == {"error": "call unknown", "field": "call_id",
                                 "detail": "no such call is ringing for you"}

    svc = {"Authorization": "Bearer svc"}
    resp = await c.post("/v1/voicemail", headers=svc, json={**VM, "new": 2})
    assert await resp.json() == {"user": "sip:alice@example.com", "waiting": True, "new": 2,
                                 "old": 0, "urgent_new": 0, "urgent_old": 0, "pushed": True}
    stats = await (await c.get("/v1/admin/stats", headers=svc)).json()
    assert stats["calls"] == {"ringing": 0} and stats["call_push"]["count"] == 0


async def test_every_error_has_one_shape(fakes: Fakes) -> None:
    c = fakes.client
    resp = await c.get("/v1/devices")
    assert resp.status == 401 and len(resp.headers.getall("WWW-Authenticate")) == 2
    assert await resp.json() == {"error": "unauthorized", "field": None,
                                 "detail": "credentials required"}
    resp = await c.get("/v1/admin/stats")
    assert await resp.json() == {"error": "unauthorized", "field": None,
                                 "detail": "service token required"}
    assert (await c.get("/v1/dev/pushes", headers=BASIC)).status == 404  # no sink given
    resp = await c.get("/v1/calls?limit=x", headers=BASIC)
    assert resp.status == 400 and await resp.json() == {
        "error": "invalid", "field": "limit", "detail": "must be an integer"}
    fakes.store.down = True
    resp = await c.get("/healthz")
    assert resp.status == 503 and "Retry-After" not in resp.headers
    assert await resp.json() == {"error": "unavailable", "field": None,
                                 "detail": "the store is unavailable",
                                 "status": "store unavailable"}
    resp = await c.post("/v1/voicemail", headers={"Authorization": "Bearer svc"}, json=VM)
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert (await resp.json())["error"] == "unavailable"
