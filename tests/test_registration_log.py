"""A log line per registration change: new binding, binding gone (unregistered,
expired, flow closed), device added / token changed / token moved; refreshes only at
DEBUG. Each line carries its structured fields (for [log] format = "json") and no
push token anywhere."""

from __future__ import annotations

import logging
import time

import pytest

from tests.helpers.node import DOMAIN, ServerFactory, instance_id
from tests.helpers.wait import wait_for

TOKEN, NEW_TOKEN = "a1" * 32, "c3" * 32
PARAM = ";pn-param=ABCD123456.com.example.dialer.voip"


def apns(token: str) -> str:
    return f";pn-provider=apns;pn-prid={token}{PARAM}"


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sipwake.registrar" and r.levelno == level]


def fields(record: logging.LogRecord) -> set[tuple[str, object]]:
    return {(k, v) for k, v in record.__dict__.items() if isinstance(v, str | int)}


def said(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage().split(":")[0] for r in lines(caplog, level)]


async def test_each_change_is_one_line(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sipwake.registrar")
    r = await start_server()
    await r.add_user("alice")
    await r.add_user("bob")
    registrar = r.server.registrar
    aor = f"sip:alice@{DOMAIN}"
    inst = f';+sip.instance="<{instance_id()}>"'

    phone = await r.phone("alice", transport="tcp")
    assert (await phone.register(params=apns(TOKEN), header_params=inst)).status == 200
    assert said(caplog) == ["device added", "binding new"]
    device, binding = lines(caplog)
    (bound,) = registrar.live_bindings(aor)
    assert fields(binding) >= {
        ("user", aor), ("device", bound.device_id), ("transport", "tcp"),
        ("source", bound.received), ("instance", bound.instance),
    }  # fmt: skip
    assert fields(device) >= {
        ("user", aor), ("device", bound.device_id), ("platform", "ios"), ("provider", "apns"),
        ("call_mode", "voip"),
    }  # fmt: skip
    assert bound.received in binding.getMessage() and bound.device_id in binding.getMessage()

    caplog.clear()  # a refresh: DEBUG only
    assert (await phone.register(params=apns(TOKEN), header_params=inst)).status == 200
    assert said(caplog) == [] and said(caplog, logging.DEBUG) == ["binding refreshed"]

    caplog.clear()  # the app got a new token
    assert (await phone.register(params=apns(NEW_TOKEN), header_params=inst)).status == 200
    assert said(caplog) == ["device token changed"]

    caplog.clear()  # bob logs in on the same phone: the token moves to his device
    bobs = await r.phone("bob")
    assert (await bobs.register(params=apns(NEW_TOKEN))).status == 200
    assert said(caplog) == ["device token moved", "device added", "binding new"]
    moved = lines(caplog)[0]
    assert moved.__dict__["from_user"] == aor and moved.__dict__["user"] == f"sip:bob@{DOMAIN}"

    caplog.clear()  # alice logs out (her device, left without a token, went with the move)
    assert (await phone.register(params=apns(TOKEN), header_params=inst, expires=0)).status == 200
    assert said(caplog) == ["device added", "binding gone (unregistered)"]
    assert lines(caplog)[-1].__dict__["reason"] == "unregistered"

    caplog.clear()  # a TCP binding goes with its connection
    assert (await phone.register(params=apns(TOKEN), header_params=inst)).status == 200
    caplog.clear()
    phone.close()
    await wait_for(lambda: not registrar.bindings.get(aor))
    assert said(caplog) == ["binding gone (flow closed)"]

    caplog.clear()  # bob's binding outlives its expiry
    registrar.clock = lambda: time.time() + 3600
    assert await registrar.expire() == 1
    assert said(caplog) == ["binding gone (expired)"]
    assert registrar.binding_count == 0

    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for token in (TOKEN, NEW_TOKEN):
        assert token not in text


async def test_binding_count_follows_the_bindings(start_server: ServerFactory) -> None:
    r = await start_server()
    registrar = r.server.registrar
    phones = []
    for n in range(3):
        await r.add_user(f"u{n}")
        phone = await r.phone(f"u{n}", transport="tcp" if n % 2 else "udp")
        assert (await phone.register()).status == 200
        phones.append(phone)
    assert registrar.binding_count == 3
    assert (await phones[0].register()).status == 200  # a refresh
    assert registrar.binding_count == 3
    assert (await phones[2].register(expires=0)).status == 200
    phones[1].close()
    await wait_for(lambda: registrar.binding_count == 1)
    assert registrar.binding_count == sum(len(b) for b in registrar.bindings.values())
