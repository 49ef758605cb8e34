"""Device HTTP API end to end: a real server, real HTTP on 127.0.0.1.

Auth (Basic, Digest, bearer), body validation, cross-user isolation, token
hygiene, the registrar meeting HTTP-uploaded devices, the developer sink and the
OpenAPI document.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from openapi_spec_validator import validate

from sipwake.api.auth import issue_token
from sipwake.api.devices import FIELDS
from sipwake.config import ConfigError, PushConfig
from sipwake.push.notification import MessageNotification
from sipwake.push.service import PushService
from sipwake.push_setup import build_push
from sipwake.store.models import Device
from tests.helpers.agent import digest_header
from tests.helpers.api import ALERT, IOS, VOIP, basic, bearer
from tests.helpers.node import DOMAIN, Running, ServerFactory, instance_id, make_config

APNS_VOIP = f";pn-provider=apns;pn-prid={VOIP};pn-param=ABCD123456.com.example.dialer.voip"
ANDROID = {"platform": "android", "push_token": "dK3x:APA91bH-token_1", "topic": "my-project"}


class Api:
    """A client of one running server's HTTP port."""

    def __init__(self, running: Running, session: aiohttp.ClientSession) -> None:
        assert running.server.http is not None
        self.base = f"http://127.0.0.1:{running.server.http.port}"
        self.session = session

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None = None,
        body: Any = None, data: bytes | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        if body is not None:
            data = json.dumps(body).encode()
        async with self.session.request(
            method, self.base + path, headers=headers, data=data
        ) as resp:
            raw = await resp.read()
            return resp.status, (json.loads(raw) if raw else None), resp

    async def put(self, device_id: str, body: Any, user: str = "alice") -> tuple[int, Any]:
        status, doc, _ = await self.call("PUT", f"/v1/devices/{device_id}", basic(user), body)
        return status, doc

    async def get(self, device_id: str, user: str = "alice") -> tuple[int, Any]:
        status, doc, _ = await self.call("GET", f"/v1/devices/{device_id}", basic(user))
        return status, doc


@pytest.fixture
async def api(running: Running) -> AsyncIterator[Api]:
    await running.add_user("alice")
    await running.add_user("bob")
    async with aiohttp.ClientSession() as session:
        yield Api(running, session)


# ---------------------------------------------------------------------- auth
async def test_auth_failures_are_401_with_challenges(api: Api, running: Running) -> None:
    alice = await running.server.store.get_user("alice", DOMAIN)
    assert alice is not None
    expired = issue_token(running.server.secret, alice, ttl=-10)
    forged = issue_token(b"another secret", alice, 3600)
    cases = [
        {},
        basic("alice", "wrong"),
        basic("mallory"),
        {"Authorization": "Basic !!!not-base64"},
        bearer("garbage"),
        bearer(expired),
        bearer(forged),
        {"Authorization": "Negotiate abc"},
    ]
    for headers in cases:
        status, doc, resp = await api.call("GET", "/v1/devices", headers)
        assert status == 401, headers
        assert doc["error"] == "unauthorized"
        challenges = resp.headers.getall("WWW-Authenticate")
        assert any(c.startswith("Digest ") and "algorithm=MD5" in c for c in challenges)
        assert any("Basic realm=" in c and "Bearer realm=" in c for c in challenges)
    # a device route is guarded the same way, before the body is looked at
    status, _, _ = await api.call("PUT", "/v1/devices/d1", {}, IOS)
    assert status == 401


async def test_bearer_token_from_basic_credentials(api: Api) -> None:
    status, doc, resp = await api.call("POST", "/v1/tokens", basic("alice"))
    assert status == 200 and doc["token_type"] == "Bearer" and doc["expires_in"] > 0
    assert resp.headers["Cache-Control"] == "no-store"
    status, _, _ = await api.call("PUT", "/v1/devices/phone", bearer(doc["token"]), IOS)
    assert status == 201
    status, listing, _ = await api.call("GET", "/v1/devices", bearer(doc["token"]))
    assert status == 200 and [d["device_id"] for d in listing["devices"]] == ["phone"]
    # a token cannot mint its own successors
    status, _, _ = await api.call("POST", "/v1/tokens", bearer(doc["token"]))
    assert status == 401


async def test_http_digest(api: Api) -> None:
    _, _, resp = await api.call("GET", "/v1/devices")
    challenges = resp.headers.getall("WWW-Authenticate")
    md5 = next(c for c in challenges if "algorithm=MD5" in c)
    sha = next(c for c in challenges if "algorithm=SHA-256" in c)  # same nonce

    async def devices(challenge: str, nc: int, password: str = "secret",
                      uri: str = "/v1/devices") -> int:
        auth = digest_header(challenge, "GET", uri, "alice", password, nc=nc)
        return (await api.call("GET", "/v1/devices", {"Authorization": auth}))[0]

    assert await devices(md5, 1) == 200
    assert await devices(sha, 2) == 200
    assert await devices(md5, 2) == 401  # nonce-count replayed
    assert await devices(md5, 3, uri="/v1/tokens") == 401  # credentials for another URI
    assert await devices(md5, 4) == 200
    auth = digest_header(sha, "POST", "/v1/tokens", "alice", "secret", nc=5)
    assert (await api.call("POST", "/v1/tokens", {"Authorization": auth}))[0] == 200
    # a wrong password spends the nonce: even the right one needs a new challenge now
    assert await devices(md5, 6, password="nope") == 401
    assert await devices(md5, 7) == 401


# ------------------------------------------------------------------ devices
async def test_put_get_list_delete_round_trip(api: Api) -> None:
    body = {**IOS, "sandbox": True, "call_mode": "alert", "ringtone": "ring.caf",
            "locale": "fr-CA", "privacy": True, "instance": instance_id()}
    status, doc, resp = await api.call("PUT", "/v1/devices/iphone-1", basic("alice"), body)
    assert status == 201 and resp.headers["Location"] == "/v1/devices/iphone-1"
    for key, value in body.items():
        assert doc[key] == value, key
    assert doc["provider"] == "apns" and doc["enabled"] and doc["token_updated_at"] > 0
    status, got = await api.get("iphone-1")
    assert status == 200 and got == doc

    # PUT replaces: fields left out take their defaults
    status, doc = await api.put("iphone-1", {"platform": "ios", "voip_token": VOIP})
    assert status == 200
    assert doc["privacy"] is False and doc["push_token"] == "" and doc["call_mode"] == "voip"
    assert doc["created_at"] == got["created_at"]

    status, doc = await api.put("pixel", ANDROID)
    assert status == 201 and doc["provider"] == "fcm" and doc["call_mode"] == "alert"
    status, listing, _ = await api.call("GET", "/v1/devices", basic("alice"))
    assert [d["device_id"] for d in listing["devices"]] == ["iphone-1", "pixel"]

    status, _, _ = await api.call("DELETE", "/v1/devices/pixel", basic("alice"))
    assert status == 204
    assert (await api.get("pixel"))[0] == 404
    assert (await api.call("DELETE", "/v1/devices/pixel", basic("alice")))[0] == 404


async def test_privacy_flag_round_trips(api: Api, running: Running) -> None:
    for privacy in (True, False, True):
        status, doc = await api.put("d", {**ANDROID, "privacy": privacy})
        assert status in (200, 201) and doc["privacy"] is privacy
        assert (await api.get("d"))[1]["privacy"] is privacy
        stored = await running.server.store.get_device("d")
        assert stored is not None and stored.privacy is privacy


BAD_BODIES: list[tuple[Any, int, str | None]] = [
    ({**IOS, "colour": "red"}, 422, "colour"),
    ({k: v for k, v in IOS.items() if k != "platform"}, 422, "platform"),
    ({**IOS, "platform": "windows"}, 422, "platform"),
    ({**IOS, "platform": 1}, 422, "platform"),
    ({**IOS, "privacy": "yes"}, 422, "privacy"),
    ({**IOS, "sandbox": 1}, 422, "sandbox"),
    ({**IOS, "push_token": 1234}, 422, "push_token"),
    ({**IOS, "push_token": "not-hex-at-all-not-hex"}, 422, "push_token"),
    ({**IOS, "voip_token": "<a1a1 a1a1>"}, 422, "voip_token"),
    ({**IOS, "push_token": "ab"}, 422, "push_token"),
    ({"platform": "ios"}, 422, "push_token"),
    ({"platform": "ios", "push_token": ALERT, "call_mode": "voip"}, 422, "call_mode"),
    ({**IOS, "call_mode": "ring"}, 422, "call_mode"),
    ({"platform": "android"}, 422, "push_token"),
    ({**ANDROID, "voip_token": VOIP}, 422, "voip_token"),
    ({**ANDROID, "push_token": "has space"}, 422, "push_token"),
    ({**IOS, "topic": "com.example/evil"}, 422, "topic"),
    ({**IOS, "ringtone": "../../etc/passwd"}, 422, "ringtone"),
    ({**IOS, "locale": "en US"}, 422, "locale"),
    ({**IOS, "instance": "x" * 300}, 422, "instance"),
    ({**IOS, "topic": ["a"]}, 422, "topic"),
    (b"{not json", 400, None),
    (b"", 400, None),
    (b"\xff\xfe\x00garbage", 400, None),
    (b"[1, 2]", 400, None),
    (b'"ios"', 400, None),
    (b'{"platform": "ios", "platform": "android"}', 400, "platform"),
    (b'{"platform": "ios", "privacy": NaN}', 400, None),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_BODIES)
async def test_bad_bodies_name_the_field(
    api: Api, body: Any, status: int, field: str | None
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, doc, resp = await api.call("PUT", "/v1/devices/d1", basic("alice"), data=data)
    assert got == status, doc
    assert resp.content_type == "application/json"
    assert doc["field"] == field and doc["detail"]
    assert (await api.get("d1"))[0] == 404  # nothing was stored


async def test_bad_device_id_and_nulls(api: Api) -> None:
    status, doc, _ = await api.call("PUT", "/v1/devices/" + "x" * 200, basic("alice"), IOS)
    assert status == 400 and doc["field"] == "device_id"
    status, doc, _ = await api.call("GET", "/v1/devices/a%20b", basic("alice"))
    assert status == 400 and doc["field"] == "device_id"
    # null means "not given"
    status, doc = await api.put("d1", {**ANDROID, "locale": None, "privacy": None})
    assert status == 201 and doc["locale"] == "" and doc["privacy"] is False


async def test_body_too_large_is_413(api: Api) -> None:
    big = {**ANDROID, "ringtone": "r" * 20000}
    status, doc, _ = await api.call("PUT", "/v1/devices/d1", basic("alice"), big)
    assert status == 413 and doc["error"] == "too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        yield b'{"platform": "android", "ringtone": "'
        for _ in range(40):
            yield b"r" * 1024
        yield b'"}'

    async with api.session.put(
        api.base + "/v1/devices/d1", headers=basic("alice"), data=chunks()
    ) as resp:
        assert resp.status == 413
    assert (await api.get("d1"))[0] == 404


async def test_users_never_see_or_change_each_others_devices(api: Api) -> None:
    assert (await api.put("shared-id", IOS, user="alice"))[0] == 201
    missing = await api.get("no-such-device", user="bob")
    status, doc = await api.get("shared-id", user="bob")
    assert status == 404 and doc == missing[1]  # same answer: existence not revealed
    status, doc, _ = await api.call("DELETE", "/v1/devices/shared-id", basic("bob"))
    assert status == 404
    status, doc = await api.put("shared-id", ANDROID, user="bob")
    assert status == 403 and doc["field"] == "device_id"
    status, listing, _ = await api.call("GET", "/v1/devices", basic("bob"))
    assert listing == {"devices": []}
    status, doc = await api.get("shared-id", user="alice")
    assert status == 200 and doc["platform"] == "ios" and doc["push_token"] == ALERT


async def test_new_token_reenables_a_disabled_device(api: Api, running: Running) -> None:
    store = running.server.store
    _, first = await api.put("d1", ANDROID)
    assert await store.disable_device("d1", "UNREGISTERED", first["token_updated_at"])
    _, doc = await api.get("d1")
    assert not doc["enabled"] and doc["disabled_reason"] == "UNREGISTERED"
    # the same token again (e.g. with a new locale): still dead
    _, doc = await api.put("d1", {**ANDROID, "locale": "de"})
    assert not doc["enabled"] and doc["token_updated_at"] == first["token_updated_at"]
    # a new token: pushed again, and the provider's earlier verdict no longer applies
    _, doc = await api.put("d1", {**ANDROID, "push_token": "fresh-token-2"})
    assert doc["enabled"] and doc["disabled_reason"] == ""
    assert doc["token_updated_at"] > first["token_updated_at"]
    assert not await store.disable_device("d1", "Unregistered", first["token_updated_at"])
    assert (await api.get("d1"))[1]["enabled"]


# ---------------------------------------------------- HTTP meets REGISTER
async def test_put_then_register_keep_one_device(api: Api, running: Running) -> None:
    inst = instance_id()
    status, _ = await api.put("my-iphone", {**IOS, "instance": inst, "privacy": True})
    assert status == 201
    phone = await running.phone("alice")
    for _ in range(2):  # the first REGISTER joins the device, the refresh finds it again
        resp = await phone.register(params=APNS_VOIP, header_params=f';+sip.instance="<{inst}>"')
        assert resp.status == 200
    aor = f"sip:alice@{DOMAIN}"
    (device,) = await running.server.store.devices(aor)
    assert device.device_id == "my-iphone"
    assert device.voip_token == VOIP and device.team_id == "ABCD123456"
    assert device.push_token == ALERT  # a VoIP-only REGISTER keeps the uploaded alert token
    assert device.privacy  # preferences from the HTTP API survive
    (binding,) = running.server.registrar.live_bindings(aor)
    assert binding.device_id == "my-iphone"
    assert running.server.registrar.devices["my-iphone"] == device


async def test_register_then_put_meet_under_the_registrar_id(api: Api, running: Running) -> None:
    inst = instance_id()
    phone = await running.phone("alice")
    resp = await phone.register(params=APNS_VOIP, header_params=f';+sip.instance="<{inst}>"')
    assert resp.status == 200
    status, listing, _ = await api.call("GET", "/v1/devices", basic("alice"))
    (listed,) = listing["devices"]
    assert listed["instance"] == inst and listed["voip_token"] == VOIP
    # another id for the same installation would be a second device: refused
    status, doc = await api.put("mine", {**IOS, "instance": inst})
    assert status == 409 and doc["field"] == "instance"
    assert doc["device_id"] == listed["device_id"]
    status, doc = await api.put(listed["device_id"], {**IOS, "instance": inst, "ringtone": "a.caf"})
    assert status == 200 and doc["ringtone"] == "a.caf" and doc["push_token"] == ALERT
    # the registrar's cache saw the PUT
    cached = running.server.registrar.devices[listed["device_id"]]
    assert cached.ringtone == "a.caf"
    assert len(await running.server.store.devices(f"sip:alice@{DOMAIN}")) == 1


async def test_delete_evicts_the_registrar_cache(api: Api, running: Running) -> None:
    inst = instance_id()
    await api.put("gone", {**IOS, "instance": inst})
    phone = await running.phone("alice")
    header = f';+sip.instance="<{inst}>"'
    assert (await phone.register(params=APNS_VOIP, header_params=header)).status == 200
    assert "gone" in running.server.registrar.devices
    assert (await api.call("DELETE", "/v1/devices/gone", basic("alice")))[0] == 204
    assert "gone" not in running.server.registrar.devices
    # the app registers again with its token: the registrar makes a fresh record
    assert (await phone.register(params=APNS_VOIP, header_params=header)).status == 200
    (device,) = await running.server.store.devices(f"sip:alice@{DOMAIN}")
    assert device.device_id != "gone" and device.voip_token == VOIP and device.push_token == ""


async def test_devices_of_sees_every_change(api: Api, running: Running) -> None:
    """Calls, inbox and voicemail read a user's devices through the registrar's cache:
    a PUT, a REGISTER, a refused token and a DELETE all show at once."""
    registrar, store = running.server.registrar, running.server.store
    aor = f"sip:alice@{DOMAIN}"
    assert await registrar.devices_of(aor) == []
    await api.put("d1", ANDROID)
    (d1,) = await registrar.devices_of(aor)
    await api.put("d1", {**ANDROID, "locale": "fr"})
    assert [d.locale for d in await registrar.devices_of(aor)] == ["fr"]
    phone = await running.phone("alice")
    inst = instance_id()
    assert (await phone.register(params=APNS_VOIP, header_params=f';+sip.instance="<{inst}>"')).status == 200
    assert len(await registrar.devices_of(aor)) == 2
    # the push service disables a refused token through the registrar
    assert await running.server.registrar.disable_device("d1", "UNREGISTERED", d1.token_updated_at)
    assert {d.device_id: d.enabled for d in await registrar.devices_of(aor)}["d1"] is False
    assert (await api.call("DELETE", "/v1/devices/d1", basic("alice")))[0] == 204
    assert [d.device_id for d in await registrar.devices_of(aor)] != ["d1"]
    assert await registrar.devices_of(aor) == await store.devices(aor)


async def test_register_wins_back_an_id_squatted_over_http(api: Api, running: Running) -> None:
    """Bob guesses the id the registrar will give Alice's phone and takes it first."""
    inst = instance_id()
    aor = f"sip:alice@{DOMAIN}"
    derived = hashlib.sha256(f"{aor}|{inst}".encode()).hexdigest()[:24]
    assert (await api.put(derived, ANDROID, user="bob"))[0] == 201
    bob, registrar = f"sip:bob@{DOMAIN}", running.server.registrar
    assert [d.device_id for d in await registrar.devices_of(bob)] == [derived]  # cached
    phone = await running.phone("alice")
    resp = await phone.register(params=APNS_VOIP, header_params=f';+sip.instance="<{inst}>"')
    assert resp.status == 200
    (device,) = await running.server.store.devices(aor)
    assert device.device_id == derived and device.voip_token == VOIP
    assert (await api.get(derived, user="bob"))[0] == 404
    assert await registrar.devices_of(bob) == []  # Bob's calls no longer push Alice's phone


# ------------------------------------------------------------------- sink
async def test_sink_shows_pushes_to_own_devices(api: Api, running: Running) -> None:
    push = running.server.push
    assert push.sink is not None
    await api.put("pixel", ANDROID)
    await api.put("bobs", {**ANDROID, "push_token": "bobs-own:token"}, user="bob")
    store = running.server.store
    note = MessageNotification(message_id="m1", from_uri=f"sip:carol@{DOMAIN}",
                               from_number="carol", from_name="Carol", body="hi there",
                               unread=1)
    for device_id in ("pixel", "bobs"):
        device = await store.get_device(device_id)
        assert device is not None
        assert (await push.send(device, note)).delivered
    status, pushes, _ = await api.call("GET", "/v1/dev/pushes", basic("alice"))
    assert status == 200
    (entry,) = pushes["pushes"]
    assert entry["device_id"] == "pixel" and entry["provider"] == "fcm"
    data = entry["payload"]["data"]  # the FCM message, as sent
    assert data["type"] == "message" and data["preview"] == "hi there"
    assert data["from_name"] == "Carol" and data["unread"] == "1"
    assert (await api.call("GET", "/v1/dev/pushes?limit=0", basic("alice")))[0] == 400
    assert (await api.call("GET", "/v1/dev/pushes"))[0] == 401


def _apns_key(tmp_path: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "AuthKey.p8"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path)


async def test_no_sink_when_a_provider_is_configured(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path)
    apns = cfg.push.apns
    apns.team_id, apns.key_id, apns.key_file = "ABCD123456", "KEY1234567", _apns_key(tmp_path)
    apns.url = apns.sandbox_url = "http://127.0.0.1:9"  # never reached here
    apns.allow_insecure = True
    r = await start_server(cfg)
    assert r.server.push.sink is None
    await r.add_user("alice")
    async with aiohttp.ClientSession() as session:
        status, doc, _ = await Api(r, session).call("GET", "/v1/dev/pushes", basic("alice"))
    assert status == 404 and doc["error"] == "not_found"


def test_push_setup_config_errors(tmp_path: Path) -> None:
    store: Any = object()
    assert isinstance(build_push(PushConfig(), store), PushService)
    half = PushConfig()
    half.apns.team_id = "ABCD123456"
    with pytest.raises(ConfigError, match=r"push\.apns\.key_id"):
        build_push(half, store)
    missing = PushConfig()
    missing.apns.__dict__.update(team_id="T", key_id="K", key_file=str(tmp_path / "none.p8"))
    with pytest.raises(ConfigError, match=r"\[push.apns\]"):
        build_push(missing, store)
    fcm = PushConfig()
    fcm.fcm.project_id = "p"
    with pytest.raises(ConfigError, match="service_account_file"):
        build_push(fcm, store)


# ---------------------------------------------------------------- OpenAPI
async def test_openapi_document_is_valid_and_matches_the_router(
    api: Api, running: Running
) -> None:
    status, doc, _ = await api.call("GET", "/v1/openapi.json")
    assert status == 200
    validate(doc)
    assert running.server.http is not None
    routes = {
        (r.method, r.resource.canonical)
        for r in running.server.http.app.router.routes()
        if r.resource is not None
    }
    documented = [
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    ]
    assert documented
    for method, path in documented:
        assert (method, path) in routes, (method, path)
    assert set(doc["components"]["schemas"]["DeviceInput"]["properties"]) == set(FIELDS)
    from sipwake.api.voicemail import FIELDS as VOICEMAIL_FIELDS

    voicemail_input = doc["components"]["schemas"]["VoicemailReport"]
    assert set(voicemail_input["properties"]) == VOICEMAIL_FIELDS
    public = ("/v1/devices", "/v1/tokens", "/v1/dev/", "/v1/messages", "/v1/calls",
              "/v1/voicemail")
    for method, path in routes:  # every public app/webhook route is documented
        if path.startswith(public) and method != "HEAD":
            assert (method, path) in documented, (method, path)
    assert doc["paths"]["/v1/voicemail"]["post"]["security"] == [{"serviceAuth": []}]


# ------------------------------------------------------------- PostgreSQL
async def test_put_get_on_postgresql(start_server: ServerFactory, pg_url: str) -> None:
    r = await start_server(store={"url": pg_url})
    await r.add_user("alice")
    async with aiohttp.ClientSession() as session:
        api = Api(r, session)
        status, put = await api.put("pg-phone", {**IOS, "privacy": True, "sandbox": True})
        assert status == 201
        status, got = await api.get("pg-phone")
        assert status == 200 and got == put and got["privacy"] is True
    stored = await r.server.store.get_device("pg-phone")
    assert isinstance(stored, Device) and stored.aor == f"sip:alice@{DOMAIN}"
