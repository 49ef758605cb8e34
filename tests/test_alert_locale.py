"""A device's `locale` (uploaded over HTTP) picks the language of what its pushes
say, end to end: a parked call to an iPhone in alert mode set to de-AT and an
Android phone set to fr, as the dev sink shows what each app received."""

from __future__ import annotations

import base64
import json

import aiohttp

from tests.helpers.agent import Dialer
from tests.helpers.node import DOMAIN, ServerFactory

ALERT = "b2" * 32
AUTH = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}


async def test_a_parked_call_is_announced_in_each_device_language(
    start_server: ServerFactory,
) -> None:
    r = await start_server(calls={"park_timeout": 10})
    await r.add_user("alice")
    await r.add_user("bob")
    assert r.server.http is not None
    base = f"http://127.0.0.1:{r.server.http.port}/v1/devices"
    devices = {
        "iphone": {"platform": "ios", "push_token": ALERT, "topic": "com.example.dialer",
                   "call_mode": "alert", "ringtone": "ring.caf", "locale": "de-AT"},
        "pixel": {"platform": "android", "push_token": "dK3x:APA91bH-token_1",
                  "topic": "my-project", "locale": "fr"},
    }  # fmt: skip
    async with aiohttp.ClientSession() as http:
        for device_id, body in devices.items():
            async with http.put(f"{base}/{device_id}", headers=AUTH, data=json.dumps(body)) as resp:
                assert resp.status in (200, 201), await resp.text()

    bob = await r.phone("bob")
    call = Dialer(bob, f"sip:alice@{DOMAIN}", headers={"From": f'"Bob" <sip:bob@{DOMAIN}>'})
    await call.start_authenticated()
    await call.provisional(180)
    sink = r.server.push.sink
    assert sink is not None
    pushes = {p["device_id"]: p["payload"] for p in sink.pushes() if p["type"] == "call"}
    iphone = pushes["iphone"]["aps"]["alert"]
    assert iphone["title"] == "Eingehender Anruf" and iphone["title-loc-key"] == "CALL_TITLE"
    assert iphone["loc-key"] == "CALL_FROM" and iphone["body"].startswith("Eingehender Anruf von ")
    assert iphone["loc-args"] == [iphone["body"].removeprefix("Eingehender Anruf von ")]
    data = pushes["pixel"]["data"]  # the FCM message
    assert data["title"] == "Appel entrant" and data["loc_key"] == "CALL_FROM"
    assert data["body"] == "Appel entrant de " + json.loads(data["loc_args"])[0]
    call.cancel()
    assert (await call.final()).status == 487
