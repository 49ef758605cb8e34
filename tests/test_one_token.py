"""One push token, one device (DESIGN "Contract details, second round"): a token
presented again — by a reinstall with a new +sip.instance, by another user logging
in on the same phone, or over the HTTP API — moves; one event pushes it once."""

from __future__ import annotations

import aiohttp

from tests.helpers.agent import Dialer
from tests.helpers.api import basic
from tests.helpers.calls import APNS, OFFER, TRUSTED, VOIP, wait_push
from tests.helpers.node import DOMAIN, Running, ServerFactory, instance_id

ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
BOTH = ";pn-provider=apns;pn-prid={alert}:remote&{voip}:voip;pn-param=ABCD123456.com.example.dialer.remote&voip"


async def users(start_server: ServerFactory) -> Running:
    r = await start_server(sip=TRUSTED, calls={"park_timeout": 5})
    for name in ("alice", "bob", "carol"):
        await r.add_user(name)
    return r


async def test_a_new_instance_with_the_same_token_is_the_same_phone(
    start_server: ServerFactory,
) -> None:
    """linphone re-registering with a new +sip.instance and the same token once became a
    second device, and one call sent that phone several identical pushes."""
    r = await users(start_server)
    phone = await r.phone("alice")
    for _ in range(3):  # three reinstalls, each with a new instance id
        inst = f';+sip.instance="<{instance_id()}>"'
        assert (await phone.register(APNS, inst)).status == 200
        assert (await phone.register(APNS, inst, expires=0)).status == 200
    (device,) = await r.server.store.devices(ALICE)
    assert device.voip_token == VOIP and device.instance == inst.split("<")[1].rstrip('>"')

    caller = await r.phone("bob")
    Dialer(caller, ALICE, OFFER).start()
    pushes = await wait_push(r, "call")
    assert [p["device_id"] for p in pushes] == [device.device_id]
    sink = r.server.push.sink
    assert sink is not None
    assert len(sink.pushes()) == 1  # not one per stale device


async def test_another_user_on_the_same_phone_takes_the_token(start_server: ServerFactory) -> None:
    r = await users(start_server)
    alert, voip = "c4" * 32, "d5" * 32
    alice = await r.phone("alice")
    assert (await alice.register(BOTH.format(alert=alert, voip=voip))).status == 200
    # Bob logs in on that iPhone: same VoIP token; Alice's device keeps its alert token
    bob = await r.phone("bob")
    params = f";pn-provider=apns;pn-prid={voip.upper()};pn-param=ABCD123456.com.example.dialer.voip"
    assert (await bob.register(params)).status == 200
    (bobs,) = await r.server.store.devices(BOB)
    assert bobs.voip_token == voip  # one spelling: hex tokens are stored lower case
    (alices,) = await r.server.store.devices(ALICE)
    assert alices.push_token == alert and alices.voip_token == ""
    assert [d.device_id for d in await r.server.registrar.devices_of(ALICE)] == [alices.device_id]
    # then Carol takes the alert token too: nothing is left of Alice's device
    carol = await r.phone("carol")
    params = f";pn-provider=apns;pn-prid={alert};pn-param=ABCD123456.com.example.dialer.remote"
    assert (await carol.register(params)).status == 200
    assert await r.server.store.devices(ALICE) == []
    assert await r.server.registrar.devices_of(ALICE) == []
    assert len(await r.server.store.devices_with_token(alert)) == 1


async def test_an_http_upload_moves_a_token_from_a_registered_device(
    start_server: ServerFactory,
) -> None:
    r = await users(start_server)
    phone = await r.phone("alice")
    assert (await phone.register(APNS)).status == 200
    assert r.server.http is not None
    body = {"platform": "ios", "voip_token": VOIP, "topic": "com.example.dialer"}
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{r.server.http.port}/v1/devices/bobs-iphone"
        async with http.put(url, json=body, headers=basic("bob")) as resp:
            assert resp.status == 201
    assert await r.server.store.devices(ALICE) == []
    assert [d.device_id for d in await r.server.store.devices(BOB)] == ["bobs-iphone"]
    # the last to present the token holds it: Alice's phone registering again takes it back
    assert (await phone.register(APNS)).status == 200
    (holder,) = await r.server.store.devices_with_token(VOIP)
    assert holder.aor == ALICE and await r.server.store.devices(BOB) == []


async def test_apns_tokens_follow_one_rule_at_register(running: Running) -> None:
    """A 9-digit token was accepted by REGISTER, then refused by the APNs encoder, which
    disabled the device; now REGISTER says which rule failed, as the HTTP API does."""
    await running.add_user("alice")
    phone = await running.phone("alice")
    short = APNS.replace(VOIP, "abcdef012")
    resp = await phone.register(short)
    assert resp.status == 400
    assert "16-400 hexadecimal digits, not 9" in resp.reason
    resp = await phone.register(APNS.replace(VOIP, "zz" * 32))
    assert resp.status == 400 and "hexadecimal digits only" in resp.reason
    assert await running.server.store.devices(ALICE) == []
