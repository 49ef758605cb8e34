"""`sipwake push test USER` as the installed console script runs it, against the strict
APNs and FCM stand-ins: one request per device of the user through the configured
credentials, each provider's answer printed (status, reason, apns-id / FCM message name,
latency) beside the masked token; exit 0 when at least one push was accepted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sipwake.store import open_store
from sipwake.store.models import Device
from tests.helpers.apns_standin import Reply
from tests.helpers.configs import write_config
from tests.helpers.fcm_standin import FCMReply
from tests.helpers.node import DOMAIN
from tests.helpers.providers import push_standins
from tests.helpers.push import BUNDLE, PROJECT
from tests.served import run_sipwake

ALICE = f"sip:alice@{DOMAIN}"
ALERT, VOIP, DEAD = "a1" * 32, "b2" * 32, "d4" * 32
FCM_TOKEN = "fcm-token-" + "x" * 40


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sipwake.db"
    return str(request.getfixturevalue("pg_url"))


async def put_devices(store_url: str, *devices: Device) -> None:
    store = await open_store(store_url)
    try:
        for device in devices:
            await store.put_device(device)
    finally:
        await store.close()


async def push_log(store_url: str, device_id: str) -> list[tuple[str, str, int, str]]:
    store = await open_store(store_url)
    try:
        return [(a.kind, a.provider, a.status, a.outcome)
                for a in await store.push_attempts(device_id)]
    finally:
        await store.close()


def iphone(device_id: str = "iphone", **kw: object) -> Device:
    values: dict[str, object] = {"push_token": ALERT, "voip_token": VOIP, "topic": BUNDLE}
    values.update(kw)
    return Device(device_id, ALICE, "apns", "ios", **values)  # type: ignore[arg-type]


def pixel(device_id: str = "pixel", token: str = FCM_TOKEN) -> Device:
    return Device(device_id, ALICE, "fcm", "android", push_token=token, topic=PROJECT)


def row_of(out: str, device_id: str) -> list[str]:
    (line,) = [x for x in out.splitlines() if x.startswith(device_id + " ")]
    return line.split()


async def push_test(config: Path, cwd: Path, *extra: str) -> tuple[int, str]:
    return await run_sipwake("push", "test", "alice", "--config", str(config), *extra, cwd=cwd)


async def test_each_device_gets_a_test_push_and_its_answer_is_shown(
    store_url: str, tmp_path: Path
) -> None:
    async with push_standins(tmp_path) as providers:
        config = write_config(tmp_path, store_url, providers.toml())
        dead_android = pixel("old-pixel", "fcm-dead-" + "y" * 40)
        await put_devices(store_url, iphone(), pixel(), dead_android,
                          iphone("ipad", push_token=DEAD, voip_token=""))
        providers.apns.always(DEAD, Reply(410, "Unregistered", timestamp_ms=1))
        providers.fcm.always(dead_android.push_token, FCMReply("UNREGISTERED"))

        code, out = await push_test(config, tmp_path)
        print(out)  # shown with -s: what a developer reads

        assert code == 0, out
        assert f"test push to 4 devices of {ALICE}" in out
        assert out.splitlines()[-1] == "2 of 4 accepted by the provider"
        header = next(x for x in out.splitlines() if x.startswith("DEVICE "))
        assert header.split() == ["DEVICE", "PLATFORM", "PROVIDER", "TYPE", "TOKEN", "ANSWER",
                                  "MS", "ID"]

        # the iPhone: an alert to its alert token (never a VoIP push for a test)
        (request,) = [r for r in providers.apns.requests if r.token == ALERT]
        assert request.headers["apns-push-type"] == "alert"
        assert request.headers["apns-topic"] == BUNDLE
        assert request.payload["type"] == "test"
        assert request.payload["aps"]["alert"] == {
            "title": "Test push", "title-loc-key": "TEST_TITLE",
            "body": "Sent by sipwake push test", "loc-key": "TEST_BODY", "loc-args": [],
        }  # fmt: skip
        _device, platform, provider, kind, token, status, outcome, ms, answer_id = row_of(
            out, "iphone")
        assert (platform, provider, kind, status, outcome) == ("ios", "apns", "alert", "200",
                                                               "delivered")
        assert token == "a1a1a1…a1a1"  # masked
        assert answer_id == request.headers["apns-id"]
        assert float(ms) > 0
        assert ALERT not in out and VOIP not in out  # a token never printed whole

        # the Android phone: a data message; the answer carries FCM's message name
        (send,) = [s for s in providers.fcm.sends if s.message.get("token") == FCM_TOKEN]
        assert send.message["data"]["type"] == "test"
        assert send.message["data"]["sent_at"].isdigit()  # FCM data values are strings
        pixel_row = row_of(out, "pixel")
        assert pixel_row[1:5] == ["android", "fcm", "data", "fcm-to…xxxx"]
        assert pixel_row[5:7] == ["200", "delivered"]
        assert re.fullmatch(rf"projects/{PROJECT}/messages/0:[0-9a-f]{{16}}", pixel_row[-1])

        # refused tokens: status and reason, with what they usually mean
        assert row_of(out, "ipad")[5:8] == ["410", "invalid_token", "Unregistered"]
        assert row_of(out, "old-pixel")[5:8] == ["404", "invalid_token", "UNREGISTERED"]
        assert "ipad: Unregistered: the app was removed, or its token changed" in out
        assert providers.apns.violations == [] and providers.fcm.violations == []

    # written to the push log like the server's own pushes; the refused device is not
    # disabled by a test
    assert await push_log(store_url, "iphone") == [("test", "apns", 200, "delivered")]
    assert await push_log(store_url, "old-pixel") == [("test", "fcm", 404, "invalid_token")]
    store = await open_store(store_url)
    try:
        assert (await store.get_device("ipad")).enabled  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_call_option_sends_a_voip_push(tmp_path: Path) -> None:
    async with push_standins(tmp_path) as providers:
        url = f"sqlite:///{tmp_path}/sipwake.db"
        config = write_config(tmp_path, url, providers.toml())
        await put_devices(url, iphone("voip-only", push_token=""))

        code, out = await push_test(config, tmp_path)  # a test alert has no token to go to
        assert code == 1, out
        assert "no alert token (device has only a VoIP token)" in out
        assert providers.apns.requests == []

        code, out = await push_test(config, tmp_path, "--call")
        assert code == 0, out
        (request,) = providers.apns.requests
        assert request.token == VOIP
        assert request.headers["apns-push-type"] == "voip"
        assert request.headers["apns-topic"] == f"{BUNDLE}.voip"
        assert request.payload["type"] == "call"
        assert request.payload["caller_name"] == "sipwake push test"
        assert row_of(out, "voip-only")[3:7] == ["voip", "b2b2b2…b2b2", "200", "delivered"]


async def test_exit_1_when_no_push_got_through(tmp_path: Path) -> None:
    async with push_standins(tmp_path) as providers:
        url = f"sqlite:///{tmp_path}/sipwake.db"
        config = write_config(tmp_path, url, providers.toml())
        await put_devices(url, iphone(push_token=DEAD))
        providers.apns.always(DEAD, Reply(400, "BadDeviceToken"))
        code, out = await push_test(config, tmp_path)
        assert code == 1, out
        assert row_of(out, "iphone")[5:8] == ["400", "invalid_token", "BadDeviceToken"]
        assert "a development (sandbox) token sent to production or the reverse" in out
        assert out.splitlines()[-1] == "0 of 1 accepted by the provider"

        code, out = await run_sipwake("push", "test", "nobody", "--config", str(config),
                                      cwd=tmp_path)
        assert code == 1
        assert f"sipwake: sip:nobody@{DOMAIN} has no push devices" in out


async def test_without_provider_credentials_it_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path}/sipwake.db")
    code, out = await push_test(config, tmp_path)
    assert code == 2
    assert out.strip() == (
        "sipwake: no push provider is configured ([push.apns] or [push.fcm] credentials): "
        "the server shows its pushes at GET /v1/dev/pushes instead"
    )
