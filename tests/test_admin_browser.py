"""The admin page in a real browser: headless Chromium (Debian's `chromium`, driven by
playwright without its own browser download) loads `/admin#token=…` from the installed
`sipwake serve`, and sees a registration with push parameters, then a call parked for
the sleeping phone and its timeline (parked, push out) appear while the page polls.
A screenshot goes to the test's tmp_path (and to SIPWAKE_ADMIN_SCREENSHOT when set)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.agent import Agent, Dialer
from tests.served import DOMAIN, Served, serve

CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-admin-token"
VOIP = "c3" * 32
PN = f";pn-provider=apns;pn-prid={VOIP};pn-param=ABCD123456.com.example.dialer.voip"
INSTANCE = ';+sip.instance="<urn:uuid:0b9c1f4e-8d5e-4b7a-9a0e-2c1d3e4f5a6b>"'
OFFER = b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"

# skipped on a developer's machine without it; on CI (CI=true) it fails instead
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (./test.sh installs it: apt-get install chromium)",
)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    s = await serve(tmp_path, f"""
[sip]
domain = "{DOMAIN}"
listen = ["udp:127.0.0.1:0"]
secret = "browser-secret"

[http]
listen = "127.0.0.1:0"
api_token = "{TOKEN}"

[calls]
park_timeout = 20
""")
    yield s
    await s.stop()


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield await browser.new_page(viewport={"width": 1400, "height": 1000})
        await browser.close()


async def test_admin_page_shows_registration_parked_call_and_timeline(
    served: Served, page: Any, tmp_path: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    # without the token, the page asks for it and shows no data
    await page.goto(f"{served.http}/admin")
    await page.wait_for_selector("#login:not([hidden])")
    assert await page.is_hidden("#board")

    await page.goto(f"{served.http}/admin#token={TOKEN}")
    await page.wait_for_selector("#status.live")
    assert "token=" not in page.url  # out of the address bar once read

    # a phone registers its push token: it appears under registrations and devices
    phone = await Agent("alice", "secret", DOMAIN, served.sip["udp"]).start()
    assert (await phone.register(params=PN, header_params=INSTANCE)).status == 200
    await page.wait_for_selector("#registrations td:text('sip:alice@example.com')")
    devices = await page.inner_text("#devices")
    assert "ios" in devices and "voip" in devices and VOIP not in devices
    assert f"{VOIP[:6]}…{VOIP[-4:]}" in devices  # masked

    # it sleeps; a call to it is parked and its timeline shows the push going out
    assert (await phone.register(params=PN, header_params=INSTANCE, expires=0)).status == 200
    caller = await Agent("bob", "secret", DOMAIN, served.sip["udp"]).start()
    dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
    await dial.start_authenticated()
    await dial.provisional(180)
    await page.wait_for_selector("#calls td:text('parked')")
    await page.wait_for_selector("#timeline li.event[data-event='parked']")
    await page.wait_for_selector("#timeline li.event[data-event='push']")
    timeline = await page.inner_text("#timeline")
    assert "invite in" in timeline and "push out · delivered" in timeline
    assert "provider=sink" in timeline and "type=call" in timeline
    pushes = await page.inner_text("#pushes")
    assert "call" in pushes and "delivered" in pushes
    assert "sink" in await page.inner_text("#providers")

    shot = tmp_path / "admin.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("SIPWAKE_ADMIN_SCREENSHOT"):  # docs/admin.png is made this way
        shutil.copy(shot, os.environ["SIPWAKE_ADMIN_SCREENSHOT"])
    dial.cancel()
    assert (await dial.final()).status == 487
    await page.wait_for_selector("#timeline li.event[data-event='end']")
    phone.close()
    caller.close()
    assert not [e for e in errors if "401" not in e], errors  # the tokenless load's 401 aside
