"""Voicemail pushes end to end through the real APNs and FCM providers, configured the
way an operator would ([push.apns], [push.fcm]), against the strict local stand-ins:
exactly one push per device per new voicemail, none when only the old count moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipwake.config import ApnsConfig, FcmConfig
from sipwake.store.models import Device
from tests.helpers.apns_standin import APNsStandIn
from tests.helpers.fcm_standin import FCMStandIn
from tests.helpers.node import DOMAIN, Running, ServerFactory
from tests.helpers.push import (
    BUNDLE,
    KEY_ID,
    PROJECT,
    SA_EMAIL,
    SA_KEY_ID,
    TEAM_ID,
    write_apns_key,
    write_service_account,
)
from tests.helpers.voicemail import notify, summary

ALICE = f"sip:alice@{DOMAIN}"
IPHONE, PRIVATE = "a1" * 32, "b2" * 32
PIXEL = "fcm-token:APA91b-pixel"


@pytest.fixture
async def push_server(
    start_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[tuple[Running, APNsStandIn, FCMStandIn]]:
    key_file, key = write_apns_key(tmp_path)
    sa_file, sa_key = write_service_account(tmp_path, "https://oauth2.invalid/token")
    apns = await APNsStandIn(team_id=TEAM_ID, key_id=KEY_ID, public_key=key.public_key(),
                             topics={BUNDLE}).start()  # fmt: skip
    fcm = await FCMStandIn(project_id=PROJECT, client_email=SA_EMAIL, key_id=SA_KEY_ID,
                           public_key=sa_key.public_key()).start()  # fmt: skip
    try:
        running = await start_server(
            sip={"trusted_peers": ["127.0.0.1"]},
            push={
                "apns": ApnsConfig(team_id=TEAM_ID, key_id=KEY_ID, key_file=key_file,
                                   topic=BUNDLE, url=apns.url, sandbox_url=apns.url,
                                   allow_insecure=True),
                "fcm": FcmConfig(project_id=PROJECT, service_account_file=sa_file,
                                 url=fcm.url, token_url=fcm.token_url, allow_insecure=True),
            },
        )  # fmt: skip
        assert running.server.push.sink is None  # the real providers
        await running.add_user("alice")
        store = running.server.store
        for device in (
            Device("iphone", ALICE, "apns", "ios", push_token=IPHONE, topic=BUNDLE,
                   call_mode="alert"),
            Device("private", ALICE, "apns", "ios", push_token=PRIVATE, topic=BUNDLE,
                   privacy=True),
            Device("voip-only", ALICE, "apns", "ios", voip_token="c3" * 32, topic=BUNDLE),
            Device("pixel", ALICE, "fcm", "android", push_token=PIXEL, topic=PROJECT),
            Device("old-pixel", ALICE, "fcm", "android", push_token="gone", topic=PROJECT,
                   enabled=False),
        ):  # fmt: skip
            await store.put_device(device)
        yield running, apns, fcm
    finally:
        await apns.close()
        await fcm.close()


async def test_one_push_per_device_per_new_voicemail(
    push_server: tuple[Running, APNsStandIn, FCMStandIn],
) -> None:
    running, apns, fcm = push_server
    vm = await running.phone("voicemail")

    async def report(new: int, old: int) -> None:
        assert (await notify(vm, "alice", summary(new, old))).status == 200
        await running.server.voicemail.settled()

    await report(1, 0)
    assert sorted(r.token for r in apns.requests) == sorted([IPHONE, PRIVATE])
    assert [s.message["token"] for s in fcm.sends] == [PIXEL]
    by_token = {r.token: r for r in apns.requests}
    iphone = by_token[IPHONE]
    assert iphone.status == 200
    assert iphone.headers["apns-push-type"] == "alert"
    assert iphone.headers["apns-topic"] == BUNDLE
    assert iphone.headers["apns-priority"] == "10"
    assert iphone.headers["apns-collapse-id"] == "voicemail"
    payload = iphone.payload
    assert payload["aps"]["badge"] == 1 and payload["aps"]["alert"]["title"] == "New voicemail"
    assert {k: v for k, v in payload.items() if k != "aps"} == {
        "type": "voicemail", "from_uri": "sip:+15551234@example.com",
        "from_name": "Bob Builder", "duration": 42, "new": 1, "old": 0}  # fmt: skip
    private = by_token[PRIVATE].payload  # privacy mode: no caller leaves the server
    assert (private["from_uri"], private["from_name"], private["new"]) == ("", "", 1)
    assert "body" not in private["aps"]["alert"]
    message = fcm.sends[0].message
    assert message["data"] == {"type": "voicemail", "from_uri": "sip:+15551234@example.com",
                               "from_name": "Bob Builder", "duration": "42", "new": "1",
                               "old": "0",
                               # what to show (push/alert_text.py)
                               "title": "New voicemail", "title_loc_key": "VOICEMAIL_TITLE",
                               "body": "New voicemail from Bob Builder",
                               "loc_key": "VOICEMAIL_FROM", "loc_args": '["Bob Builder"]'}  # fmt: skip
    assert message["android"]["priority"] == "HIGH"

    # the same state, only the old count moving, new dropping: nothing more
    await report(1, 0)
    await report(1, 1)
    await report(0, 2)
    assert len(apns.requests) == 2 and len(fcm.sends) == 1

    # the next voicemail: exactly one more push per device
    await report(1, 2)
    assert len(apns.requests) == 4 and len(fcm.sends) == 2
    assert fcm.sends[-1].message["data"]["new"] == "1"
    assert apns.violations == [] and fcm.violations == []
    # every attempt is in the push log, the voip-only device's skip included
    log = await running.server.store.push_attempts("voip-only")
    assert [(a.kind, a.outcome) for a in log] == [("voicemail", "skipped")] * 2
